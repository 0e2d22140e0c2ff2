"""Config arguments, bad input and the summary command."""

import json

import pytest

from resnet_jax.config import arguments
from resnet_jax.errors import ConfigError
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
