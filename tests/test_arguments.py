"""Config arguments, bad input and the summary command."""

import json

import pytest

from resnet_jax.config import arguments
from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from tests.helpers import load_config
from tests.helpers import run_cli


def test_paper_defaults():
  cifar = load_config('configs/cifar10.py:resnet110').model
  assert (cifar.shortcut, cifar.block, cifar.stride, cifar.init) == (
    'A',
    'standard',
    'v1',
    'fan_in',
  )
  assert load_config('configs/imagenet.py:resnet34').model.shortcut == 'A'
  assert load_config('configs/imagenet.py:resnet50').model.shortcut == 'B'
  plain = load_config('configs/cifar10.py:plain56').model
  assert not plain.residual and plain.shortcut is None


def test_options_reach_the_model():
  model = resnet.build(
    load_config(
      'configs/imagenet.py:resnet50,shortcut=D,stride=v1.5,block=preact,'
      'dtype=bfloat16'
    ).model,
    1000,
  )
  assert (model.shortcut, model.stride_in) == ('D', 'v1.5')
  assert model.block_cls.__name__ == 'PreActBottleneckBlock'
  assert model.dtype.__name__ == 'bfloat16'


@pytest.mark.parametrize(
  'arg,message',
  [
    ('vgg16', 'unknown model'),
    ('resnet20,shortcut=E', 'not one of A, B, C, D'),
    ('resnet20,stride=v2', 'not one of v1, v1.5'),
    ('resnet20,block=bottle', 'not one of standard, preact'),
    ('resnet20,width=2', 'KEY one of shortcut, block, stride, dtype'),
    ('plain20,shortcut=B', 'plain nets have no shortcut'),
    ('resnext50', 'needs cardinality and width'),
  ],
)
def test_bad_config_arguments(arg, message):
  with pytest.raises(ConfigError, match=message):
    arguments.parse(arg)


CIFAR_DEPTHS = '(e.g. 20, 32, 44, 56, 110, 1202)'
BOTTLENECK_ONLY = (
  'model.cardinality and model.stride apply to bottleneck nets '
  '(depth 50, 101, 152) only'
)


@pytest.mark.parametrize(
  'arg,key,value,message',
  [
    (
      'cifar10.py:resnet21',
      None,
      None,
      f'CIFAR depth 21 is not 6n+2 with n >= 1 {CIFAR_DEPTHS}',
    ),
    (
      'cifar10.py:resnet2',
      None,
      None,
      f'CIFAR depth 2 is not 6n+2 with n >= 1 {CIFAR_DEPTHS}',
    ),
    (
      'imagenet.py:resnet20',
      None,
      None,
      'ImageNet depth 20 is not one of 18, 34, 50, 101, 152',
    ),
    (
      'cifar10.py:resnet20',
      'family',
      'mnist',
      "model.family='mnist' is not one of cifar, imagenet",
    ),
    (
      'cifar10.py:resnet20',
      'shortcut',
      'E',
      "model.shortcut='E' is not one of A, B, C, D",
    ),
    (
      'cifar10.py:plain20',
      'shortcut',
      'A',
      "model.shortcut='A' on a plain "
      'net: plain nets have no shortcut (leave it None)',
    ),
    (
      'cifar10.py:resnet20',
      'block',
      'x',
      "model.block='x' is not one of standard, preact",
    ),
    ('cifar10.py:resnet20', 'stride', 'v1.5', BOTTLENECK_ONLY),
    ('cifar10.py:resnet20', 'cardinality', 32, BOTTLENECK_ONLY),
    (
      'imagenet.py:resnet50',
      'stride',
      'v3',
      "model.stride='v3' is not one of v1, v1.5",
    ),
    (
      'cifar10.py:resnet20',
      'dtype',
      'float16',
      "model.dtype='float16' is not one of float32, bfloat16",
    ),
    (
      'cifar10.py:resnet20',
      'init',
      'xavier',
      "model.init='xavier' is not one of fan_in, fan_out",
    ),
    (
      'imagenet.py:resnet50',
      'stem',
      'wide',
      "model.stem='wide' is not one of standard, deep",
    ),
    (
      'cifar10.py:resnet20',
      'stem',
      'deep',
      "model.stem='deep' is an ImageNet stem; CIFAR nets have one 3x3 conv",
    ),
    (
      'cifar10.py:plain20',
      'zero_init_residual',
      True,
      'model.zero_init_residual=True on a plain net: with no shortcut to '
      'carry the signal, zeroing the last BN of each block zeroes the '
      "network's output (it is a residual nets' trick)",
    ),
  ],
)
def test_bad_model_values_rejected_by_build(arg, key, value, message):
  """In process, with the whole message: the key it names is the one to
  fix (a refusal naming another key, or none, is a wrong message)."""
  config = load_config(f'configs/{arg}')
  if key:
    config.model[key] = value
  with pytest.raises(ConfigError) as refused:
    resnet.build(config.model, config.data.num_classes)
  assert str(refused.value) == message


def test_summary_json():
  result = run_cli(
    '-m',
    'resnet_jax.summary',
    '--config=configs/cifar10.py:resnet20,shortcut=B',
    '--json',
  )
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary['params'] == 272_474
  assert summary['macs'] == 40_813_184
  assert [s['name'] for s in summary['stages']] == [
    'stem',
    'stage1',
    'stage2',
    'stage3',
    'head',
  ]


def test_summary_table():
  result = run_cli(
    '-m', 'resnet_jax.summary', '--config=configs/imagenet.py:resnet50'
  )
  assert result.returncode == 0, result.stderr
  last = result.stdout.strip().splitlines()[-1].split()
  assert last == ['total', '25,557,032', '3,857,973,248']
