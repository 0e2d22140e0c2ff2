"""configs/bag_of_tricks.py against the paper ("Bag of Tricks", He, Zhang
et al. 2019): what each row trains, read from the parts it builds (the
learning rate at the paper's epochs, the network's size, the loss's
targets, the mixing), not from the config's keys; and reproduce's plan,
with the teacher trained before its students."""

import json
import os

import jax.numpy as jnp
import pytest

from resnet_jax.config import keys
from resnet_jax.data import augment
from resnet_jax.errors import ConfigError
from resnet_jax.model import counting
from resnet_jax.model import resnet
from resnet_jax.paper import experiments
from resnet_jax.paper import reproduce
from resnet_jax.run import files
from resnet_jax.run import layout
from resnet_jax.train import losses
from resnet_jax.train import optim
from tests.helpers import load_config

ROWS = (
  'baseline efficient resnet_d cosine label_smoothing distill mixup '
  'mixup_distill teacher'
).split()
STEPS_PER_EPOCH = 1000  # any: the schedule is read at epochs


def row(name, family=''):
  config = load_config(f'configs/bag_of_tricks.py:{name}{family}')
  keys.check(config)
  return config


def lr_at(config, *epochs):
  lr = optim.schedule(config, STEPS_PER_EPOCH)
  return [float(lr(jnp.asarray(round(e * STEPS_PER_EPOCH)))) for e in epochs]


def params(config):
  model = resnet.build(config.model, config.data.num_classes)
  return counting.count(model, config.data.image_size)['params']


def test_the_learning_rate_of_each_row_at_the_papers_epochs():
  # Baseline: 0.1, divided by 10 at 30, 60, 90 of 120 epochs (section 2).
  base = row('baseline')
  assert lr_at(base, 0, 29.9, 30, 60, 90, 119.9) == pytest.approx(
    [0.1, 0.1, 0.01, 0.001, 0.0001, 0.0001]
  )
  assert base.optim.nesterov and base.train.length == 120
  # Efficient: batch 1024 at 0.4, linear warm-up over 5 epochs (3.1).
  eff = row('efficient')
  assert eff.train.batch_size == 1024
  assert lr_at(eff, 2.5, 5, 29.9, 30) == pytest.approx(
    [0.2, 0.4, 0.4, 0.04], rel=1e-3
  )
  # Cosine: 0.4 at the end of the warm-up, half of it midway through
  # the 115 epochs after, 0 at the end (5.1, and GluonCV).
  cos = row('cosine')
  assert lr_at(cos, 5, 5 + 115 / 2, 120) == pytest.approx(
    [0.4, 0.2, 0.0], abs=1e-6
  )
  # Mixup trains 200 epochs: the cosine over 195 of them.
  mix = row('mixup')
  assert lr_at(mix, 5 + 195 / 2) == pytest.approx([0.2], rel=1e-4)


def test_the_networks_are_resnet50_then_resnet50d_and_the_teacher_152d():
  sizes = {name: params(row(name)) for name in ('baseline', 'resnet_d')}
  assert sizes == {'baseline': 25_557_032, 'resnet_d': 25_576_264}
  teacher = row('teacher')
  assert teacher.model.depth == 152 and teacher.model.shortcut == 'D'
  assert teacher.model.stem == 'deep' and teacher.model.stride == 'v1.5'
  assert row('baseline', ',family=cifar').model.depth == 20
  assert row('teacher', ',family=cifar').model.depth == 110


def test_no_decay_on_bn_and_biases_and_zero_init_from_efficient_on():
  for name, decays_all in (('baseline', True), ('efficient', False)):
    config = row(name)
    assert (config.optim.weight_decay_on == 'all') == decays_all
    assert config.model.zero_init_residual == (not decays_all)


def test_label_smoothing_targets_and_mixing_of_the_rows():
  config = row('label_smoothing')
  targets = losses.smooth(jnp.array([3]), 1000, config.optim.label_smoothing)
  assert float(targets[0, 3]) == pytest.approx(0.9 + 0.1 / 1000)
  assert float(targets[0, 0]) == pytest.approx(0.1 / 1000)
  assert augment.Mixing.from_config(config.data) is None
  mixing = augment.Mixing.from_config(row('mixup').data)
  assert (mixing.mixup_alpha, mixing.cutmix_alpha) == (0.2, 0.0)
  assert mixing.per == 'batch' and mixing.prob == 1.0  # one draw a batch
  for name in ('distill', 'mixup_distill'):
    config = row(name)
    assert config.optim.distill_temperature == 20
    assert config.train.teacher == ''  # required: refused until given
  assert row('distill').data.mixup_alpha == 0.0
  assert row('mixup').train.teacher is None


@pytest.mark.parametrize('family', ['', ',family=cifar'])
def test_rows_differ_from_their_predecessor_by_their_trick_only(family):
  """The keys each row changes, read as sets of sections: a row adding a
  trick touches no key of another trick's (a regression guard on the
  cumulative structure; the values are checked above)."""
  flat = {
    name: keys.flatten(json.loads(row(name, family).to_json_best_effort()))
    for name in ROWS
  }
  before = {
    'efficient': 'baseline',
    'resnet_d': 'efficient',
    'cosine': 'resnet_d',
    'label_smoothing': 'cosine',
    'distill': 'label_smoothing',
    'mixup': 'label_smoothing',
    'mixup_distill': 'mixup',
  }
  changed = {
    name: {k for k in flat[name] if flat[name][k] != flat[prev].get(k)}
    for name, prev in before.items()
  }
  assert changed['cosine'] == {'optim.schedule'}
  assert changed['label_smoothing'] == {'optim.label_smoothing'}
  assert changed['distill'] == changed['mixup_distill'] == {'train.teacher'}
  assert {'data.mixup_alpha'} <= changed['mixup']
  assert not changed['resnet_d'] & changed['efficient']
  with pytest.raises(ConfigError, match="row 'distil' is not one of"):
    row('distil')


def test_reproduce_plans_the_ablation_with_the_papers_numbers(tmp_path):
  bot = experiments.EXPERIMENTS['bag_of_tricks']
  assert [r.name for r in bot.runs] == ROWS
  top1 = {
    r.name: round(100 - r.paper_error, 2) for r in bot.runs if r.paper_error
  }
  assert top1 == {
    'baseline': 75.87,
    'efficient': 76.21,
    'resnet_d': 77.16,
    'cosine': 77.91,
    'label_smoothing': 78.31,
    'distill': 78.67,
    'mixup': 79.15,
    'mixup_distill': 79.29,
  }
  assert {r.test_protocol for r in bot.runs} == {'center'}
  plan = reproduce.plan_runs(
    experiments.EXPERIMENTS['bag_of_tricks_cifar'],
    str(tmp_path),
    2,
    ['data.local_dir=/data/cifar'],
    0.01,
  )
  lengths = {task.run.name: task.config.train.length for task in plan}
  assert lengths == dict.fromkeys(ROWS, 640)
  teachers = {
    (t.run.name, t.seed): t.config.train.teacher
    for t in plan
    if t.config.train.teacher
  }
  assert teachers == {
    (name, seed): str(tmp_path / 'teacher' / f'seed{seed}')
    for name in ('distill', 'mixup_distill')
    for seed in (0, 1)
  }


RESULT = dict(error=0.1, steps=1, wall_clock_s=1.0, device='cpu', commit='c')


def test_students_train_after_their_teacher_and_wait_when_it_fails(tmp_path):
  experiment = reproduce.select(
    experiments.EXPERIMENTS['bag_of_tricks_cifar'],
    ['baseline', 'distill', 'teacher'],
  )
  plan = reproduce.plan_runs(experiment, str(tmp_path), 2, [], 0.01)
  calls = []

  def train(tasks, fails=('teacher', 1)):
    calls.append([(t.run.name, t.seed) for t in tasks])
    for t in tasks:
      if (t.run.name, t.seed) != fails:
        os.makedirs(t.workdir, exist_ok=True)
        files.write_json(layout.path(t.workdir, layout.RESULT), RESULT)

  waiting = reproduce.in_stages(plan, train)
  assert calls == [
    [('baseline', 0), ('baseline', 1), ('teacher', 0), ('teacher', 1)],
    [('distill', 0)],
  ]
  assert [(t.run.name, t.seed) for t in waiting] == [('distill', 1)]
  # The ledger says why the student has not started.
  failed = tmp_path / 'teacher' / 'seed1'
  failed.mkdir(parents=True)
  files.write_json(
    layout.path(str(failed), layout.FAILURE), dict(error='NaN', log='x')
  )
  rows = {r['model']: r for r in reproduce.ledger(experiment, str(tmp_path), 2)}
  assert rows['distill']['unfinished'] == (
    'seed 1: not started: its teacher teacher seed 1 failed'
  )
  assert rows['baseline']['unfinished'] == ''
  os.remove(layout.path(str(failed), layout.FAILURE))
  # The teacher of seed 1 finishes: the same command trains its student.
  calls.clear()
  waiting = reproduce.in_stages(plan, lambda tasks: train(tasks, fails=None))
  assert calls == [[('teacher', 1)], [('distill', 1)]]
  assert not waiting
  alone = reproduce.select(experiment, ['distill'])
  with pytest.raises(ConfigError, match="teacher 'teacher' is not a run of"):
    reproduce.plan_runs(alone, str(tmp_path), 1, [], 1.0)
  # A teacher of one's own: no teacher run needed, nothing to wait for.
  own = reproduce.plan_runs(
    alone, str(tmp_path / 'own'), 1, ['train.teacher=/my/teacher'], 1.0
  )
  assert [t.config.train.teacher for t in own] == ['/my/teacher']
  assert reproduce.ready(own, own) == (own, [])
