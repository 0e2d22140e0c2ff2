"""The valid range of every numeric config key, declared once, and the one
check of them all (`check`), run before anything is built or compiled.

Each config file declares its keys with a comment; this table says, for
each numeric one, what values make sense. A key the table does not know
is not numeric (tests/test_ranges.py holds every config file to
that), so a new numeric key cannot arrive without its range.
"""

import dataclasses
import math

from resnet_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Range:
  """low <= value <= high (strict where `*_open`); integers if `integer`."""

  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  integer: bool = False

  def holds(self, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return False
    if self.integer and value != int(value):
      return False
    if not math.isfinite(value):
      return False
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below

  def __str__(self) -> str:
    return self.describe('an integer' if self.integer else 'a number')

  def describe(self, kind: str) -> str:
    if self.high == math.inf:
      return f'{kind} {">" if self.low_open else ">="} {self.low:g}'
    left, right = '(' if self.low_open else '[', ')' if self.high_open else ']'
    return f'{kind} in {left}{self.low:g}, {self.high:g}{right}'


@dataclasses.dataclass(frozen=True)
class Each:
  """A sequence whose items are in `item`: exactly `length` of them if
  given, strictly increasing or non-decreasing if asked."""

  item: Range
  length: int | None = None
  increasing: bool = False
  ordered: bool = False  # non-decreasing

  def holds(self, value) -> bool:
    if not isinstance(value, (tuple, list)):
      return False
    if self.length is not None and len(value) != self.length:
      return False
    if not all(map(self.item.holds, value)):
      return False
    pairs = list(zip(value, value[1:]))
    if self.increasing and any(a >= b for a, b in pairs):
      return False
    return not (self.ordered and any(a > b for a, b in pairs))

  def __str__(self) -> str:
    count = f'{self.length}' if self.length else 'a tuple of'
    items = self.item.describe('integers' if self.item.integer else 'numbers')
    if self.increasing:
      items += ', strictly increasing'
    elif self.ordered:
      items += ', low then high'
    return f'{count} {items}'


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
COUNT = Range(1, integer=True)  # a size, a number of steps or of things
FRACTION = Range(0, 1, high_open=True)  # momenta: 1 would never forget
PROBABILITY = Range(0, 1)

RANGES = {
  # model
  'model.depth': COUNT,  # which depths exist: resnet.build
  'model.cardinality': COUNT,
  'model.base_width': COUNT,
  'model.bn_momentum': FRACTION,
  'model.bn_epsilon': POSITIVE,
  'model.input_scale': Each(POSITIVE, length=3),
  # data
  'data.num_classes': Range(2, integer=True),
  'data.image_size': Range(8, integer=True),
  'data.validation_size': Range(0, integer=True),  # below the set's size
  'data.scale_range': Each(COUNT, length=2, ordered=True),
  'data.lighting_std': NON_NEGATIVE,
  'data.mean_images': Range(0, integer=True),  # 0: unused (fine-tuning)
  'data.shuffle_buffer': COUNT,
  'data.eval_scales': Each(Range(8, integer=True)),
  'data.mixup_alpha': NON_NEGATIVE,  # 0: off
  'data.cutmix_alpha': NON_NEGATIVE,
  'data.mix_prob': PROBABILITY,
  'data.mix_switch_prob': PROBABILITY,
  'data.rand_augment_ops': COUNT,
  'data.rand_augment_magnitude': Range(0, 30, integer=True),
  'data.random_erasing': PROBABILITY,
  # optim
  'optim.lr': POSITIVE,
  'optim.distill_temperature': POSITIVE,
  'optim.distill_hard_weight': PROBABILITY,
  'optim.momentum': FRACTION,
  'optim.weight_decay': NON_NEGATIVE,
  'optim.lr_boundaries': Each(POSITIVE, increasing=True),
  'optim.lr_decay_factor': Range(0, 1, low_open=True),
  'optim.warmup_steps': NON_NEGATIVE,
  'optim.warmup_lr': NON_NEGATIVE,
  'optim.base_batch_size': COUNT,
  'optim.label_smoothing': FRACTION,
  'optim.clip_grad_norm': POSITIVE,  # or None: no clipping
  'optim.adam_b1': FRACTION,
  'optim.adam_b2': FRACTION,
  'optim.adam_eps': POSITIVE,
  'optim.lars_trust_coefficient': POSITIVE,
  # train (durations in train.unit)
  'train.length': POSITIVE,
  'train.batch_size': COUNT,
  'train.eval_batch_size': COUNT,
  'train.seed': Range(0, 2**31 - 1, integer=True),
  'train.log_every': POSITIVE,
  'train.eval_every': POSITIVE,
  'train.checkpoint_every': POSITIVE,
  'train.keep_checkpoints': COUNT,
  'train.microbatches': COUNT,
  'train.steps_per_dispatch': COUNT,
  'train.ema_decay': FRACTION,  # or None: no average
  'train.profile_steps': Each(
    Range(0, integer=True), length=2, increasing=True
  ),
  # finetune
  'finetune.backbone_lr_scale': POSITIVE,
}


def check(config) -> None:
  """ConfigError for the first key whose value is outside its range."""
  for key, rule in RANGES.items():
    section, name = key.split('.')
    if section not in config or name not in config[section]:
      continue  # a section or key this kind of config does not have
    value = config[section][name]
    if value is None:
      continue  # unset: off (clipping), or required and checked where used
    if not rule.holds(value):
      raise ConfigError(f'{key}={value!r} is out of range: must be {rule}')
