"""Every config key is declared in config/keys.py, each numeric one with
its range; a value outside it is refused with one line naming key, value
and range before anything is built; a workdir saved before a key existed
reads the value that reproduces its run."""

import json
import logging

import pytest

from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.train import loop
from tests.helpers import SAMPLE
from tests.helpers import load_config

CONFIGS = [
  'configs/cifar10.py:resnet110',
  'configs/cifar100.py:resnet56',
  'configs/quickstart.py',
  'configs/imagenet.py:resnet50',
  'configs/imagenet.py:resnext50_32x4d,schedule=paper',
  'configs/finetune.py:resnet18,mode=linear_probe',
  'configs/bag_of_tricks.py:mixup',
  'configs/bag_of_tricks.py:mixup,family=cifar',
]


def numeric(value) -> bool:
  if isinstance(value, bool):
    return False
  if isinstance(value, (int, float)):
    return True
  return isinstance(value, tuple) and any(numeric(v) for v in value)


def flat(config) -> dict:
  return keys.flatten(json.loads(config.to_json_best_effort()))


@pytest.mark.parametrize('name', CONFIGS)
def test_every_key_is_declared_and_every_numeric_one_ranged(name):
  config = load_config(name)
  if 'finetune' in config:
    config.data.num_classes = 5
  values = flat(config)
  assert [k for k in values if k not in keys.KEYS] == []
  unranged = [k for k, v in values.items() if numeric(v)]
  assert [k for k in unranged if keys.KEYS[k].range is None] == []
  keys.check(config)  # the defaults are valid


def test_every_declared_key_is_in_a_config_file_with_the_tables_default():
  seen = set()
  for name in CONFIGS:
    values = flat(load_config(name))
    seen |= values.keys()
    if 'bag_of_tricks' in name:
      continue  # its rows switch refinements on
    for key, value in values.items():
      default = keys.KEYS[key].default
      if default is not keys.UNSET:
        assert value == default, (name, key)
  assert sorted(keys.KEYS.keys() - seen) == []


def _saved_before_the_added_keys(name):
  """Today's config of NAME as a workdir saved before any key with
  `added` existed would hold it."""
  values = flat(load_config(name))
  return {k: v for k, v in values.items() if not keys.KEYS[k].added}


def test_older_workdirs_read_the_values_that_reproduce_their_runs():
  cifar = keys.older_values(_saved_before_the_added_keys(CONFIGS[0]))
  image_set = keys.older_values(_saved_before_the_added_keys(CONFIGS[3]))
  # CIFAR configs never had the image-set keys; image sets get them all.
  assert 'data.auto_augment' not in cifar and 'data.train_split' not in cifar
  assert image_set.keys() - cifar.keys() == {
    'data.train_split',
    'data.val_split',
    'data.auto_augment',
    'data.rand_augment_ops',
    'data.rand_augment_magnitude',
    'data.random_erasing',
  }
  assert image_set['data.train_split'] == 'train'
  assert image_set['data.val_split'] == 'validation'
  assert image_set['data.rand_augment_ops'] == 2
  # The refinements read as off, as those runs were.
  assert cifar['optim.optimizer'] == 'sgd' and cifar['train.ema_decay'] is None
  assert cifar['optim.label_smoothing'] == 0.0
  assert cifar['model.input_scale'] == (1.0, 1.0, 1.0)
  assert cifar['model.stem'] == 'standard'
  # A key's older value may depend on the run: linear probes froze BN,
  # and runs that mixed drew one weight per example.
  assert cifar['model.bn_frozen'] is False
  probe = _saved_before_the_added_keys(CONFIGS[5])
  assert keys.older_values(probe)['model.bn_frozen'] is True
  assert cifar['data.mix_lambda'] == 'batch'
  mixed = dict(_saved_before_the_added_keys(CONFIGS[0]))
  mixed['data.mixup_alpha'] = 0.2
  mixed = keys.older_values(mixed)
  assert mixed['data.mix_lambda'] == 'example'
  # Keys a saved config has are never replaced.
  assert 'optim.lr' not in cifar and 'data.mixup_alpha' not in mixed
  assert 'data.mix_lambda' not in keys.older_values(
    flat(load_config(CONFIGS[0]))
  )


def test_a_key_added_later_needs_what_older_workdirs_read():
  with pytest.raises(TypeError, match='older value'):
    keys.Key(added='2026-12-03')
  with pytest.raises(TypeError, match='needs its kind'):
    keys.Key(default=None)
  assert keys.Key(added='2026-12-03', older=3).older_value({}) == 3
  assert keys.Key(default=4, added='2026-12-03').older_value({}) == 4


def test_only_logging_paths_length_and_evaluation_may_change_on_resume():
  assert sorted(k for k, key in keys.KEYS.items() if key.resumable) == [
    'data.download',
    'data.eval_protocol',
    'data.eval_scales',
    'data.image_folder',
    'data.local_dir',
    'data.manual_dir',
    'data.tfds_data_dir',
    'data.val_split',
    'model.remat',
    'train.checkpoint_every',
    'train.eval_batch_size',
    'train.eval_every',
    'train.keep_checkpoints',
    'train.length',
    'train.log_every',
    'train.mlflow',
    'train.profile_steps',
    'train.steps_per_dispatch',
  ]
  assert keys.resumable('train.length') and not keys.resumable('optim.lr')
  assert not keys.resumable('no.such_key')


def cifar():
  config = load_config('configs/cifar10.py:resnet8')
  config.data.local_dir = str(SAMPLE)
  return config


@pytest.mark.parametrize(
  'key,value,shown',
  [
    ('optim.momentum', 1.5, 'a number in [0, 1)'),
    ('optim.momentum', 1.0, 'a number in [0, 1)'),
    ('optim.lr_boundaries', (504, 392), 'a tuple of numbers > 0, strictly'),
    ('optim.lr_boundaries', (300, 300), 'a tuple of numbers > 0, strictly'),
    ('optim.weight_decay', -1e-4, 'a number >= 0'),
    ('optim.lr', -0.1, 'a number > 0'),
    ('optim.lr', float('nan'), 'a number > 0'),
    ('optim.lr_decay_factor', 0.0, 'a number in (0, 1]'),
    ('optim.lr_decay_factor', 10.0, 'a number in (0, 1]'),
    ('optim.warmup_steps', -1, 'a number >= 0'),
    ('optim.base_batch_size', 0, 'an integer >= 1'),
    ('train.length', -5, 'a number > 0'),
    ('train.log_every', 0, 'a number > 0'),
    ('train.eval_every', -1, 'a number > 0'),
    ('train.checkpoint_every', 0, 'a number > 0'),
    ('train.batch_size', 0, 'an integer >= 1'),
    ('train.keep_checkpoints', 0, 'an integer >= 1'),
    ('train.seed', -1, 'an integer in [0, 2.14748e+09]'),
    ('train.microbatches', 0, 'an integer >= 1'),
    ('model.bn_momentum', 1.0, 'a number in [0, 1)'),
    ('model.bn_epsilon', 0.0, 'a number > 0'),
    ('model.input_scale', (1.0, 0.0, 1.0), '3 numbers > 0'),
    ('model.input_scale', (1.0, 1.0), '3 numbers > 0'),
    ('data.num_classes', 1, 'an integer >= 2'),
    ('data.validation_size', -5, 'an integer >= 0'),
    ('data.mixup_alpha', -0.2, 'a number >= 0'),
    ('data.mix_prob', 1.5, 'a number in [0, 1]'),
    ('train.ema_decay', 1.0, 'a number in [0, 1)'),
    ('train.profile_steps', (5, 5), '2 integers >= 0, strictly increasing'),
  ],
)
def test_out_of_range_values_are_refused_naming_key_value_range(
  key, value, shown
):
  config = cifar()
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ConfigError) as refused:
    loop.setup(config)
  assert str(refused.value).startswith(f'{key}={value!r} is out of range')
  assert f'must be {shown}' in str(refused.value)


@pytest.mark.parametrize(
  'key,value',
  [
    ('data.scale_range', (480, 256)),
    ('data.eval_scales', (224, 0)),
    ('data.lighting_std', -0.1),
    ('data.shuffle_buffer', 0),
    ('data.mean_images', -1),
    ('finetune.backbone_lr_scale', 0.0),
  ],
)
def test_image_and_finetuning_keys_are_ranged_too(key, value):
  config = load_config('configs/finetune.py:resnet18')
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ConfigError, match=f'{key}=.* is out of range'):
    keys.check(config)


def test_a_boundary_past_the_end_is_only_a_warning(caplog):
  config = cifar()
  config.train.length = 400
  config.optim.lr_boundaries = (200, 400)
  with caplog.at_level(logging.WARNING):
    loop.setup(config)
  (warning,) = [
    r.getMessage() for r in caplog.records if 'lr_boundaries' in r.getMessage()
  ]
  assert '400 is at or past the end of the run' in warning
  assert 'train.length=400 steps' in warning
