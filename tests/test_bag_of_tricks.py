"""configs/bag_of_tricks.py: each row adds exactly its tricks to the row
before it, on ImageNet and on CIFAR, and reproduce plans the ablation."""

import json

import pytest

from resnet_jax.config import ranges
from resnet_jax.errors import ConfigError
from resnet_jax.paper import experiments
from resnet_jax.paper import reproduce
from resnet_jax.run import resume
from tests.helpers import load_config

ROWS = 'baseline efficient resnet_d cosine label_smoothing mixup'.split()
IMAGENET_ADDS = {
  'efficient': {
    'train.batch_size': 1024,
    'optim.linear_scaling': True,
    'optim.warmup_steps': 5,
    'model.zero_init_residual': True,
    'optim.weight_decay_on': 'kernels',
    'model.dtype': 'bfloat16',
  },
  'resnet_d': {
    'model.stride': 'v1.5',
    'model.stem': 'deep',
    'model.shortcut': 'D',
  },
  'cosine': {'optim.schedule': 'cosine'},
  'label_smoothing': {'optim.label_smoothing': 0.1},
  'mixup': {'data.mixup_alpha': 0.2, 'train.length': 200},
}
CIFAR_ADDS = {
  'efficient': {
    'model.zero_init_residual': True,
    'optim.weight_decay_on': 'kernels',
    'optim.warmup': 'linear',
    'optim.warmup_steps': 400,
  },
  'resnet_d': {'model.shortcut': 'D'},
  'cosine': {'optim.schedule': 'cosine'},
  'label_smoothing': {'optim.label_smoothing': 0.1},
  'mixup': {'data.mixup_alpha': 0.2},
}


def flat(arg):
  config = load_config(f'configs/bag_of_tricks.py:{arg}')
  ranges.check(config)
  return resume.flatten(json.loads(config.to_json_best_effort()))


@pytest.mark.parametrize(
  'suffix,adds', [('', IMAGENET_ADDS), (',family=cifar', CIFAR_ADDS)]
)
def test_each_row_adds_exactly_its_tricks(suffix, adds):
  for before, row in zip(ROWS, ROWS[1:]):
    a, b = flat(before + suffix), flat(row + suffix)
    changed = {k: b[k] for k in b if a.get(k) != b[k]}
    assert changed == adds[row], row


def test_baseline_is_the_papers_and_the_paper_recipe_is_unchanged():
  base = flat('baseline')
  assert base['optim.nesterov'] and base['data.train_crop'] == 'inception'
  assert base['optim.lr_boundaries'] == (30, 60, 90)
  assert base['train.length'] == 120 and base['train.batch_size'] == 256
  assert base['model.depth'] == 50 and base['model.shortcut'] == 'B'
  assert base['model.input_scale'] == (58.393, 57.12, 57.375)
  # The CIFAR baseline is the 2015 recipe, key for key.
  assert flat('baseline,family=cifar') == resume.flatten(
    json.loads(load_config('configs/cifar10.py:resnet20').to_json_best_effort())
  )
  with pytest.raises(ConfigError, match="row 'distill' is not one of"):
    load_config('configs/bag_of_tricks.py:distill')


def test_reproduce_plans_the_ablation_with_the_papers_numbers(tmp_path):
  bot = experiments.EXPERIMENTS['bag_of_tricks']
  assert [r.name for r in bot.runs] == ROWS
  assert [round(100 - r.paper_error, 2) for r in bot.runs] == [
    75.87,
    76.21,
    77.16,
    77.91,
    78.31,
    79.15,
  ]
  assert {r.test_protocol for r in bot.runs} == {'center'}
  plan = reproduce.plan_runs(
    experiments.EXPERIMENTS['bag_of_tricks_cifar'],
    str(tmp_path),
    1,
    ['data.local_dir=/data/cifar'],
    0.01,
  )
  lengths = {run.name: config.train.length for run, _, config, _ in plan}
  assert lengths == dict.fromkeys(ROWS, 640)
  assert plan[-1][2].data.mixup_alpha == 0.2
