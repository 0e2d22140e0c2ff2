"""Training end to end on the bundled real CIFAR-10 sample."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from resnet_jax.eval import bn_stats
from resnet_jax.eval import evaluator
from resnet_jax.train import loop
from tests.helpers import REPO
from tests.helpers import few_devices
from tests.helpers import load_config
from tests.helpers import run_cli
from tests.helpers import tiny_config as shared_tiny_config
from tests.helpers import tiny_flags

SAMPLE = str(REPO / 'data' / 'cifar10-sample')


def tiny_config(length=40, **train):
  """The shared tiny run at batch 32, evaluated in batches of 64."""
  return shared_tiny_config(
    **dict(
      dict(length=length, batch_size=32, log_every=4, eval_batch_size=64),
      **train,
    )
  )


def read_metrics(workdir, kind='train'):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['kind'] == kind]


def test_loss_falls_on_the_bundled_sample(tmp_path):
  config = tiny_config(length=64, log_every=1)
  result = loop.train_and_evaluate(config, str(tmp_path), few_devices())
  losses = [r['loss'] for r in read_metrics(tmp_path)]
  assert len(losses) == 64
  assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.15, losses
  assert result['num_examples'] == 200 and result['step'] == 64
  assert all(np.isfinite(r['grad_norm']) for r in read_metrics(tmp_path))


def untimed(records):
  """Metrics records without their clock readings."""
  return [
    {k: v for k, v in r.items() if 'per_sec' not in k and k != 'time'}
    for r in records
  ]


@pytest.mark.xla_default_emitters
def test_several_steps_per_call_train_exactly_as_one_per_call(tmp_path):
  """train.steps_per_dispatch=4: the loop runs 4-step calls between its
  logs (every 4 steps) and 1-step calls around the evaluation at 6; the
  logged metrics and the final state are those of one step per call, bit
  for bit."""
  runs = {}
  for per_call in (1, 4):
    config = tiny_config(length=12, eval_every=6, steps_per_dispatch=per_call)
    # Two devices: the one-step program is the loss test's.
    workdir = str(tmp_path / str(per_call))
    result = loop.train_and_evaluate(config, workdir, few_devices())
    records = read_metrics(tmp_path / str(per_call))
    records += read_metrics(tmp_path / str(per_call), 'validation')
    runs[per_call] = (result, records)
  (r1, m1), (r4, m4) = runs[1], runs[4]
  assert [r['step'] for r in m4] == [4, 8, 12, 6, 12]
  assert untimed(m1) == untimed(m4)
  assert r1['loss'] == r4['loss'] and r4['step'] == 12


def test_evaluation_counts_every_example_once():
  config = tiny_config()
  config.data.validation_size = 201  # odd: 64-example batches, last padded
  exp = loop.setup(config)
  state = loop.initial_state(exp)
  evaluation = evaluator.ArrayEvaluator(
    exp.input.data.eval, 'validation', model=exp.model, batch_size=64
  )
  result = evaluation(state)
  assert result['num_examples'] == 201
  # The same numbers computed directly, unsharded, in one batch.
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  x = exp.input.data.eval.images.astype(np.float32) - state.pixel_mean
  logits = np.asarray(exp.model.apply(variables, x))
  labels = exp.input.data.eval.labels
  assert result['top1_accuracy'] == pytest.approx(
    np.mean(logits.argmax(-1) == labels)
  )
  top5 = np.argsort(-logits, -1)[:, :5]
  assert result['top5_accuracy'] == pytest.approx(
    np.mean((top5 == labels[:, None]).any(-1))
  )


TINY_FLAGS = tiny_flags(length=6, log_every=2, eval_every=6)


def test_train_and_evaluate_commands(tmp_path):
  workdir = tmp_path / 'run'
  result = run_cli('train.py', *TINY_FLAGS, f'--workdir={workdir}', devices=2)
  assert result.returncode == 0, result.stderr
  final = json.loads(result.stdout.strip().splitlines()[-1])
  assert final['step'] == 6 and final['num_examples'] == 200
  assert sorted(os.listdir(workdir)) == [
    'checkpoints',
    'classes.json',  # the sample's batches.meta.txt names the classes
    'config.json',
    'devices.json',  # what it trained on: 1 process of 2 devices
    'lock',  # held while it trained; empty now
    'metrics.jsonl',
    'tensorboard',
  ]
  assert json.loads((workdir / 'devices.json').read_text()) == dict(
    processes=1, local_devices=2, devices=2
  )
  assert os.listdir(workdir / 'tensorboard')
  assert json.loads((workdir / 'classes.json').read_text())[:2] == [
    'airplane',
    'automobile',
  ]
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['train']['length'] == 6 and saved['model']['depth'] == 8
  kinds = [r['kind'] for r in map(json.loads, open(workdir / 'metrics.jsonl'))]
  assert kinds == ['train'] * 3 + ['validation']
  for key in ('loss', 'error', 'lr', 'images_per_sec'):
    assert key in read_metrics(workdir)[0]

  result = run_cli(
    '-m', 'resnet_jax.evaluate', f'--workdir={workdir}', devices=2
  )
  assert result.returncode == 0, result.stderr
  # Reading a run's checkpoints is the normal case: no warning about it.
  for orbax_notice in ('read only', 'read_only'):
    assert orbax_notice not in result.stderr, result.stderr
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
    devices=2,
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
    '--checkpoint_every=2',
    '--config.train.batch_size=16',
    devices=2,
  )
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['step_images_per_sec'] > 0
  assert report['loop_images_per_sec'] > 0
  assert report['loop_with_checkpoints_images_per_sec'] > 0
  assert report['devices'] == 2 and report['platform'] == 'cpu'
  assert report['compile_seconds'] > 0
  # ResNet-8: 3 x 2 x its forward multiply-accumulates per image.
  assert report['model_flops_per_image'] == 6 * 12_239_488
  # CPUs have no listed peak and report no memory statistics.
  assert report['mfu'] is None and report['peak_device_memory_bytes'] is None


def test_mfu_is_achieved_over_peak_flops():
  from resnet_jax.train import benchmark

  config = load_config('configs/cifar10.py:resnet20')
  u = benchmark.utilisation(config, 1000.0, peak_tflops=10.0)
  flops = 6 * 40_551_040  # ResNet-20's forward MACs (tests/test_counting.py)
  assert u['model_flops_per_image'] == flops
  assert u['mfu'] == pytest.approx(flops * 1000 / (10e12 * 8))  # 8 devices


def test_bn_recomputed_as_the_average_of_batch_statistics():
  config = tiny_config()
  exp = loop.setup(config)
  state = loop.initial_state(exp)
  rng = np.random.default_rng(0)
  batches = [
    rng.normal(3.0, 2.0, (8, 32, 32, 3)).astype(np.float32) for _ in range(3)
  ]
  new = bn_stats.recompute(state, exp.model, iter(batches))
  # The stem's BN sees the stem conv's output: its mean over each batch,
  # then averaged over the three batches.
  kernel = np.asarray(state.params['conv_init']['kernel'])
  conv = lambda x: jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  expected = np.mean(
    [np.asarray(conv(b)).mean(axis=(0, 1, 2)) for b in batches], axis=0
  )
  np.testing.assert_allclose(
    new.batch_stats['bn_init']['mean'], expected, rtol=1e-4, atol=1e-5
  )
  assert not np.allclose(
    new.batch_stats['bn_init']['var'], state.batch_stats['bn_init']['var']
  )


def test_evaluate_with_recomputed_bn(tmp_path):
  """What `evaluate --recompute_bn_batches=3` does, called in-process
  (its command line is run in tests/test_evaluator.py)."""
  from resnet_jax.eval import saved_run
  from resnet_jax.run import saved_config

  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(shared_tiny_config(length=6), workdir, few_devices())
  config = saved_config.read(workdir)
  a = saved_run.evaluate_workdir(config, workdir)
  b = saved_run.evaluate_workdir(config, workdir, recompute_bn_batches=3)
  assert a['num_examples'] == b['num_examples'] == 200
  assert a['loss'] != b['loss']  # other statistics, other predictions
