"""Training end to end on the bundled real CIFAR-10 sample (issue 3)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint
from resnet_jax import resume
from resnet_jax import train_lib
from tests.helpers import REPO
from tests.helpers import load_config
from tests.helpers import run_cli

SAMPLE = str(REPO / 'data' / 'cifar10-sample')


def tiny_config(length=40, **train):
  config = load_config('configs/cifar10.py:resnet8')
  config.data.local_dir = SAMPLE
  config.data.validation_size = 200
  config.train.update(
    dict(
      dict(
        batch_size=32,
        length=length,
        log_every=4,
        eval_every=1000,
        checkpoint_every=1000,
        eval_batch_size=64,
      ),
      **train,
    )
  )
  return config


def read_metrics(workdir, kind='train'):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['kind'] == kind]


def latest_state(workdir, config):
  """The newest checkpoint of `workdir`, on the host."""
  exp = train_lib.setup(config)
  mgr = checkpoint.manager(str(workdir), 3)
  state = resume.restore_newest_readable(
    mgr, train_lib.initial_state(exp), str(workdir / 'checkpoints')
  )
  return jax.device_get(state)


def test_loss_falls_on_the_bundled_sample(tmp_path):
  config = tiny_config(length=64, log_every=1)
  result = train_lib.train_and_evaluate(config, str(tmp_path))
  losses = [r['loss'] for r in read_metrics(tmp_path)]
  assert len(losses) == 64
  assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.15, losses
  assert result['num_examples'] == 200 and result['step'] == 64
  assert all(np.isfinite(r['grad_norm']) for r in read_metrics(tmp_path))


def test_stop_and_resume_equals_uninterrupted(tmp_path):
  whole, parts = tmp_path / 'whole', tmp_path / 'parts'
  config = tiny_config(length=12, checkpoint_every=6)
  train_lib.train_and_evaluate(config, str(whole))
  train_lib.train_and_evaluate(
    tiny_config(length=6, checkpoint_every=6), str(parts)
  )
  assert sorted(os.listdir(parts / 'checkpoints')) == ['6']
  train_lib.train_and_evaluate(config, str(parts))  # same command: resumes
  a, b = latest_state(whole, config), latest_state(parts, config)
  assert int(a.step) == int(b.step) == 12
  jax.tree.map(np.testing.assert_array_equal, a, b)  # bit-identical
  losses = lambda d: [r['loss'] for r in read_metrics(d) if r['step'] > 6]
  assert losses(whole) == losses(parts)


def test_evaluation_counts_every_example_once():
  config = tiny_config()
  config.data.validation_size = 201  # odd: 64-example batches, last padded
  exp = train_lib.setup(config)
  state = train_lib.initial_state(exp)
  result = train_lib.evaluate(
    state, exp.data.eval, mesh=exp.mesh, model=exp.model, batch_size=64
  )
  assert result['num_examples'] == 201
  # The same numbers computed directly, unsharded, in one batch.
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  x = exp.data.eval.images.astype(np.float32) - state.pixel_mean
  logits = np.asarray(exp.model.apply(variables, x))
  labels = exp.data.eval.labels
  assert result['top1_accuracy'] == pytest.approx(
    np.mean(logits.argmax(-1) == labels)
  )
  top5 = np.argsort(-logits, -1)[:, :5]
  assert result['top5_accuracy'] == pytest.approx(
    np.mean((top5 == labels[:, None]).any(-1))
  )


TINY_FLAGS = [
  '--config=configs/quickstart.py:resnet8',
  '--config.train.length=6',
  '--config.train.log_every=2',
  '--config.train.eval_every=6',
  '--config.train.batch_size=16',
]


def test_train_and_evaluate_commands(tmp_path):
  workdir = tmp_path / 'run'
  result = run_cli('train.py', *TINY_FLAGS, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  final = json.loads(result.stdout.strip().splitlines()[-1])
  assert final['step'] == 6 and final['num_examples'] == 200
  assert sorted(os.listdir(workdir)) == [
    'checkpoints',
    'config.json',
    'metrics.jsonl',
    'tensorboard',
  ]
  assert os.listdir(workdir / 'tensorboard')
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['train']['length'] == 6 and saved['model']['depth'] == 8
  kinds = [r['kind'] for r in map(json.loads, open(workdir / 'metrics.jsonl'))]
  assert kinds == ['train'] * 3 + ['validation']
  for key in ('loss', 'error', 'lr', 'images_per_sec'):
    assert key in read_metrics(workdir)[0]

  result = run_cli('-m', 'resnet_jax.evaluate', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  evaluated = json.loads(result.stdout.strip().splitlines()[-1])
  assert {
    'top1_accuracy',
    'top5_accuracy',
    'loss',
    'num_examples',
    'step',
  } <= set(evaluated)
  assert evaluated['top1_accuracy'] == pytest.approx(final['top1_accuracy'])
  assert evaluated['step'] == 6

  # Another folder holding only a test split: the saved mean normalises it.
  other = tmp_path / 'other'
  other.mkdir()
  shutil.copy(
    os.path.join(SAMPLE, 'data_batch_2.bin'), other / 'test_batch.bin'
  )
  result = run_cli(
    '-m',
    'resnet_jax.evaluate',
    f'--workdir={workdir}',
    f'--config.data.local_dir={other}',
    '--config.data.eval_on=test',
  )
  assert result.returncode == 0, result.stderr
  evaluated = json.loads(result.stdout.strip().splitlines()[-1])
  assert evaluated['num_examples'] == 1000


def test_benchmark_prints_json():
  result = run_cli(
    '-m',
    'resnet_jax.benchmark',
    *TINY_FLAGS[:1],
    '--steps=4',
    '--warmup=2',
    '--config.train.batch_size=16',
  )
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['step_images_per_sec'] > 0
  assert report['loop_images_per_sec'] > 0
  assert report['devices'] == 8 and report['platform'] == 'cpu'


def _bad_dir(tmp_path, case):
  local = tmp_path / case
  if case == 'missing':
    return local
  local.mkdir()
  record = bytearray(
    np.fromfile(os.path.join(SAMPLE, 'data_batch_1.bin'), np.uint8)[:3073]
  )
  if case == 'bad_size':
    (local / 'data_batch_1.bin').write_bytes(bytes(record)[:-1])
  elif case == 'bad_label':
    record[0] = 10
    (local / 'data_batch_1.bin').write_bytes(bytes(record) * 3)
  return local


@pytest.mark.parametrize(
  'case,flags,message',
  [
    ('missing', [], 'is not a directory'),
    ('empty', [], 'has no data_batch_'),
    ('bad_size', [], 'not a positive multiple of the 3073-byte'),
    ('bad_label', [], 'has label 10, outside 0..9'),
    (None, ['--config.train.batch_size=100'], 'does not divide over 8'),
    (None, ['--config.train.batchsize=128'], "unknown config key 'batchsize'"),
    (None, ['--config.train.batch_size=big'], 'invalid literal'),
    (None, ['--config.model.shortcut=Z'], 'not one of A, B, C, D'),
  ],
)
def test_bad_input_leaves_workdir_untouched(tmp_path, case, flags, message):
  workdir = tmp_path / 'work'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('keep me')
  if case:
    flags = [f'--config.data.local_dir={_bad_dir(tmp_path, case)}']
  result = run_cli('train.py', *TINY_FLAGS, *flags, f'--workdir={workdir}')
  assert result.returncode == 2
  errors = [
    line for line in result.stderr.splitlines() if line.startswith('error:')
  ]
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert 'Traceback' not in result.stderr
  assert os.listdir(workdir) == ['notes.txt']
  assert (workdir / 'notes.txt').read_text() == 'keep me'
