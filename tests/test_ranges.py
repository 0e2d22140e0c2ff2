"""Every numeric config key has its range (ranges.RANGES), and a
value outside it is refused with one line naming key, value and range
before anything is built."""

import json
import logging

import pytest

from resnet_jax.config import ranges
from resnet_jax.errors import ConfigError
from resnet_jax.run import resume
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


@pytest.mark.parametrize('name', CONFIGS)
def test_every_numeric_key_has_a_range_that_its_default_is_in(name):
  config = load_config(name)
  if 'finetune' in config:
    config.data.num_classes = 5
  flat = resume.flatten(json.loads(config.to_json_best_effort()))
  unranged = [k for k, v in flat.items() if numeric(v)]
  assert [k for k in unranged if k not in ranges.RANGES] == []
  ranges.check(config)  # the defaults are valid


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
    ranges.check(config)


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
