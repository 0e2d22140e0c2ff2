"""Every config key, declared once: its valid range, its default where
all config files share one, when it was added and what a workdir saved
before then reads, and whether a resumed run may change it.

The config files (and `arguments.model_config`) set the keys whose values
are a recipe's (a learning rate, a schedule); `add_defaults` sets the
rest from this table. tests/test_keys.py holds every config file to the
table: each key it has is declared here, each numeric one with a range.

Adding a key: declare it here (with `added=` the day of the change and,
when today's default would change what an older run trained, `older=`),
set it in the config files if its default is a recipe's, and use it.
"""

import dataclasses
from typing import Any

from ml_collections import config_dict

from resnet_jax.config.ranges import COUNT
from resnet_jax.config.ranges import FRACTION
from resnet_jax.config.ranges import NON_NEGATIVE
from resnet_jax.config.ranges import POSITIVE
from resnet_jax.config.ranges import PROBABILITY
from resnet_jax.config.ranges import Each
from resnet_jax.config.ranges import Range
from resnet_jax.errors import ConfigError

UNSET = object()  # no default here (the config files set it), or no older


@dataclasses.dataclass(frozen=True)
class Key:
  """One key. range: what a numeric value must be (None: not numeric).
  default: set by add_defaults in every config that has the key's section
  (UNSET: the config files choose); None with `kind`: an optional value,
  off until given. added: the day of the change that added the key
  (None: there from the start); older: what a workdir saved before then
  reads, a value or a function of its flattened config (UNSET: the
  default). resumable: a resume may change it (logging, paths,
  evaluation). image_sets: only image-set configs have it (the ones with
  data.image_folder)."""

  range: Range | Each | None = None
  default: Any = UNSET
  kind: type | None = None
  added: str | None = None
  older: Any = UNSET
  resumable: bool = False
  image_sets: bool = False

  def __post_init__(self):
    if self.default is None and self.kind is None:
      raise TypeError('an optional key (default None) needs its kind')
    if self.added and self.older is UNSET and self.default is UNSET:
      raise TypeError('a key added later needs a default or an older value')

  def initial(self):
    """The value add_defaults sets."""
    if self.default is None:
      return config_dict.placeholder(self.kind)
    return self.default

  def older_value(self, flat_saved: dict):
    if self.older is UNSET:
      return self.default
    return self.older(flat_saved) if callable(self.older) else self.older


def _probes_froze_bn(saved: dict) -> bool:
  return saved.get('finetune.mode') == 'linear_probe'


def _mixed_per_example(saved: dict) -> str:
  mixed = saved.get('data.mixup_alpha') or saved.get('data.cutmix_alpha')
  return 'example' if mixed else 'batch'  # before it, mixing was per example


KEYS: dict[str, Key] = {
  # model: arguments.model_config sets them from the config argument
  'model.family': Key(),
  'model.depth': Key(COUNT),  # which depths exist: resnet.build
  'model.residual': Key(),
  'model.shortcut': Key(),
  'model.block': Key(),
  'model.stride': Key(),
  'model.stem': Key(added='2026-11-22', older='standard'),
  'model.cardinality': Key(COUNT),
  'model.base_width': Key(COUNT),
  'model.init': Key(),
  'model.zero_init_residual': Key(),
  'model.bn_momentum': Key(FRACTION),
  'model.bn_epsilon': Key(POSITIVE),
  'model.dtype': Key(),
  'model.input_scale': Key(
    Each(POSITIVE, length=3), added='2026-11-23', older=(1.0, 1.0, 1.0)
  ),
  'model.remat': Key(resumable=True),
  # Linear probes always froze their BN, before the key said so.
  'model.bn_frozen': Key(added='2026-12-02', older=_probes_froze_bn),
  # data: the config files'
  'data.name': Key(),
  'data.num_classes': Key(Range(2, integer=True)),
  'data.image_size': Key(Range(8, integer=True)),
  'data.local_dir': Key(resumable=True),
  'data.tfds_data_dir': Key(resumable=True),
  'data.download': Key(resumable=True),
  'data.validation_size': Key(Range(0, integer=True)),  # below the set's
  'data.eval_on': Key(),
  'data.augment': Key(),
  'data.image_folder': Key(resumable=True),
  'data.manual_dir': Key(resumable=True),
  'data.train_split': Key(added='2026-11-23', older='train', image_sets=True),
  'data.val_split': Key(
    added='2026-11-23', older='validation', resumable=True, image_sets=True
  ),
  'data.train_crop': Key(),
  'data.scale_range': Key(Each(COUNT, length=2, ordered=True)),
  'data.lighting_std': Key(NON_NEGATIVE),
  'data.mean': Key(),
  'data.mean_images': Key(Range(0, integer=True)),  # 0: unused (fine-tuning)
  'data.shuffle_buffer': Key(COUNT),
  'data.eval_protocol': Key(resumable=True),
  'data.eval_scales': Key(Each(Range(8, integer=True)), resumable=True),
  # optim: the config files'
  'optim.lr': Key(POSITIVE),
  'optim.momentum': Key(FRACTION),  # 1 would never forget
  'optim.nesterov': Key(),
  'optim.weight_decay': Key(NON_NEGATIVE),
  'optim.weight_decay_on': Key(),
  'optim.decoupled_weight_decay': Key(),
  'optim.schedule': Key(),
  'optim.lr_boundaries': Key(Each(POSITIVE, increasing=True)),
  'optim.lr_decay_factor': Key(Range(0, 1, low_open=True)),
  'optim.warmup': Key(),
  'optim.warmup_steps': Key(NON_NEGATIVE),
  'optim.warmup_lr': Key(NON_NEGATIVE),
  'optim.linear_scaling': Key(),
  'optim.base_batch_size': Key(COUNT),
  # train: the config files' (durations in train.unit)
  'train.unit': Key(),
  'train.length': Key(POSITIVE, resumable=True),
  'train.batch_size': Key(COUNT),
  'train.eval_batch_size': Key(COUNT, resumable=True),
  'train.seed': Key(Range(0, 2**31 - 1, integer=True)),
  'train.bn_sync': Key(),
  'train.log_every': Key(POSITIVE, resumable=True),
  'train.eval_every': Key(POSITIVE, resumable=True),
  'train.checkpoint_every': Key(POSITIVE, resumable=True),
  'train.keep_checkpoints': Key(COUNT, resumable=True),
  'train.microbatches': Key(COUNT),
  'train.steps_per_dispatch': Key(COUNT, resumable=True),
  # finetune: configs/finetune.py's
  'finetune.init_from': Key(),
  'finetune.mode': Key(),
  'finetune.backbone_lr_scale': Key(POSITIVE),
  #
  # The refinements after the 2015 recipe ("Bag of Tricks", He et al.
  # 2019; torchvision's and timm's training switches), set here, each off
  # so that the paper's recipe is unchanged.
  #
  # 'sgd' (the paper), 'adamw' or 'lars' (MLPerf's, for large batches).
  'optim.optimizer': Key(default='sgd', added='2026-12-02'),
  # e.g. 0.1: targets 1 - a + a/K and a/K
  'optim.label_smoothing': Key(FRACTION, default=0.0, added='2026-12-02'),
  # the global norm; None: off
  'optim.clip_grad_norm': Key(
    POSITIVE, default=None, kind=float, added='2026-12-02'
  ),
  'optim.adam_b1': Key(FRACTION, default=0.9, added='2026-12-02'),  # adamw
  'optim.adam_b2': Key(FRACTION, default=0.999, added='2026-12-02'),
  'optim.adam_eps': Key(POSITIVE, default=1e-8, added='2026-12-02'),
  'optim.lars_trust_coefficient': Key(  # lars only
    POSITIVE, default=0.001, added='2026-12-02'
  ),
  # Knowledge distillation (train.teacher): the softmax temperature of
  # both nets' logits in the soft term, and the weight of the hard labels'
  # loss (GluonCV's: 0.5; "Bag of Tricks" T = 20).
  'optim.distill_temperature': Key(POSITIVE, default=20.0, added='2026-12-02'),
  'optim.distill_hard_weight': Key(
    PROBABILITY, default=0.5, added='2026-12-02'
  ),
  # Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019), on the device:
  # each example mixed with the one at the mirrored place of the global
  # batch, its weight from Beta(alpha, alpha); alpha 0 turns either off.
  'data.mixup_alpha': Key(  # e.g. 0.2 (Bag of Tricks), 0.8 (timm)
    NON_NEGATIVE, default=0.0, added='2026-12-02'
  ),
  'data.cutmix_alpha': Key(NON_NEGATIVE, default=0.0, added='2026-12-02'),
  # the chance that a batch (or example) is mixed at all
  'data.mix_prob': Key(PROBABILITY, default=1.0, added='2026-12-02'),
  # with both alphas: the chance of CutMix
  'data.mix_switch_prob': Key(PROBABILITY, default=0.5, added='2026-12-02'),
  # 'batch': one weight (and box, kind, chance) per batch, as the papers'
  # code; 'example': one per example
  'data.mix_lambda': Key(
    default='batch', added='2026-12-02', older=_mixed_per_example
  ),
  # On the host, after the crop (image sets): None, 'rand' (RandAugment,
  # Cubuk et al. 2020) or 'trivial' (TrivialAugment wide, Mueller & Hutter
  # 2021); 'rand' draws rand_augment_ops operations per image at
  # rand_augment_magnitude (0-30). random_erasing: the chance of erasing a
  # box (Zhong et al. 2020).
  'data.auto_augment': Key(
    default=None, kind=str, added='2026-12-02', image_sets=True
  ),
  'data.rand_augment_ops': Key(
    COUNT, default=2, added='2026-12-02', image_sets=True
  ),
  'data.rand_augment_magnitude': Key(
    Range(0, 30, integer=True), default=9, added='2026-12-02', image_sets=True
  ),
  'data.random_erasing': Key(
    PROBABILITY, default=0.0, added='2026-12-02', image_sets=True
  ),
  # An exponential moving average of the weights and BN statistics, kept
  # in the checkpoint and evaluated beside them; None: off; e.g. 0.9999.
  'train.ema_decay': Key(
    FRACTION, default=None, kind=float, added='2026-12-02'
  ),
  # True: decay min(ema_decay, (1 + n) / (10 + n))
  'train.ema_warmup': Key(default=False, added='2026-12-02'),
  # Knowledge distillation ("Bag of Tricks" 5.3): the workdir of a run (or
  # of resnet_jax.convert's torchvision import) whose logits on each
  # training batch teach this one, computed in the same step; None: off;
  # '': required (a config that distils), refused until given.
  'train.teacher': Key(default=None, kind=str, added='2026-12-02'),
  # or 'ema': the teacher's moving average
  'train.teacher_weights': Key(default='raw', added='2026-12-02'),
  # A profiler trace of these steps, (first, end): e.g. (10, 13) traces
  # steps 11-13, into WORKDIR/tensorboard/plugins/profile; None: off.
  'train.profile_steps': Key(
    Each(Range(0, integer=True), length=2, increasing=True),
    default=None,
    kind=tuple,
    added='2026-12-02',
    resumable=True,
  ),
  # An MLflow tracking URI (http://HOST:5000, sqlite:///mlflow.db, ...)
  # that the metrics also go to, the config as params (run/mlflow_sink.py;
  # the mlflow extra); None: metrics.jsonl and TensorBoard only.
  'train.mlflow': Key(
    default=None, kind=str, added='2026-12-03', resumable=True
  ),
}


def add_defaults(config) -> None:
  """Sets every key the table gives a default, in each section the config
  has (image-set keys only where data.image_folder is); every config file
  calls this last, once its sections exist."""
  image_sets = 'data' in config and 'image_folder' in config.data
  for name, key in KEYS.items():
    section, leaf = name.split('.')
    if key.default is UNSET or section not in config:
      continue
    if key.image_sets and not image_sets:
      continue
    config[section][leaf] = key.initial()


def flatten(tree, prefix=''):
  """A nested dict -> {'a.b': value}, lists as tuples."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = (
        tuple(value) if isinstance(value, list) else value
      )
  return flat


def older_values(flat_saved: dict) -> dict:
  """The keys added since a (flattened) saved config was written, with the
  values that reproduce its run: it reads as if it had them."""
  image_sets = 'data.image_folder' in flat_saved
  sections = {name.split('.')[0] for name in flat_saved}
  return {
    name: key.older_value(flat_saved)
    for name, key in KEYS.items()
    if key.added
    and name not in flat_saved
    and name.split('.')[0] in sections
    and (image_sets or not key.image_sets)
  }


def resumable(name: str) -> bool:
  """Whether a resumed run may change the key."""
  key = KEYS.get(name)
  return key is not None and key.resumable


def check(config) -> None:
  """ConfigError for the first key whose value is outside its range; run
  before anything is built or compiled."""
  for name, key in KEYS.items():
    section, leaf = name.split('.')
    if key.range is None or leaf not in config.get(section, {}):
      continue  # not numeric, or a key this kind of config does not have
    value = config[section][leaf]
    if value is None:
      continue  # unset: off (clipping), or required and checked where used
    if not key.range.holds(value):
      raise ConfigError(
        f'{name}={value!r} is out of range: must be {key.range}'
      )
