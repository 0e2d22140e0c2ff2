"""ImageNet evaluation protocols on the bundled real JPEGs: the
centre crop, the paper's 10 crops and its multi-scale test average the
right views and count every image once, in one process or several. The
network is test_image_sets's ResNet-8 at 32x32.
"""

import functools
import json
import shutil

import jax
import numpy as np
import pytest

from resnet_jax.data import image_ops
from resnet_jax.data import image_sets
from resnet_jax.eval import bn_stats
from resnet_jax.eval import eval_steps
from resnet_jax.eval import evaluator
from resnet_jax.train import loop
from tests.test_image_sets import FOLDER
from tests.test_image_sets import imagenet_train_config
from tests.test_parallel import start_two_processes


def small_config(root, **data):
  config = imagenet_train_config(root, length=2)
  config.data.update(data)
  config.train.update(eval_every=2)
  return config


@pytest.fixture(scope='module')
def experiment():
  """Initial weights with BN statistics of the images themselves: scores
  spread out, not saturated (ties would make top-k ambiguous)."""
  exp = loop.setup(small_config(FOLDER))
  state = loop.initial_state(exp)
  mean = np.asarray(state.pixel_mean)
  ds = image_sets.eval_dataset(exp.config.data, 'train', 40, 'center')
  batches = (
    v[:, 0].astype(np.float32) - mean for v, *_ in ds.as_numpy_iterator()
  )
  return exp, bn_stats.recompute(state, exp.model, batches)


def reference(exp, state, protocol):
  """Each image alone: softmax averaged over its views, one call each."""
  d = exp.config.data
  listing = image_sets.list_image_folder(d.image_folder, 'train')
  paths, labels = listing.paths, listing.labels
  side = round(d.image_size * 256 / 224)
  views = {
    'center': lambda j: [image_ops.center_crop(j, side, d.image_size)[None]],
    'ten_crop': lambda j: [image_ops.ten_crops(j, side, d.image_size)],
    'multiscale': lambda j: [image_ops.multiscale(j, s) for s in d.eval_scales],
  }[protocol]
  probs = []
  apply = jax.jit(
    functools.partial(eval_steps.view_probabilities, model=exp.model)
  )
  for path in paths:
    with open(path, 'rb') as f:
      jpeg = f.read()
    per_view_set = [apply(state, v.numpy()[None]) for v in views(jpeg)]
    probs.append(np.mean(per_view_set, axis=0)[0])
  probs = np.asarray(probs)
  top5 = np.argsort(-probs, axis=1)[:, :5]
  return dict(
    top1_accuracy=np.mean(top5[:, 0] == labels),
    top5_accuracy=np.mean((top5 == labels[:, None]).any(1)),
    loss=np.mean(-np.log(probs[np.arange(len(labels)), labels])),
    num_examples=len(labels),
  )


@pytest.mark.parametrize('protocol', ['center', 'ten_crop', 'multiscale'])
def test_protocol_equals_each_image_evaluated_alone(experiment, protocol):
  exp, state = experiment
  evaluation = evaluator.ImageSetEvaluator(
    exp.config.data,
    model=exp.model,
    batch_size=16,  # 40 images: the last batch (or shape group) is padded
    protocol=protocol,
    split='train',
  )
  got, want = evaluation(state), reference(exp, state, protocol)
  assert got['num_examples'] == want['num_examples'] == 40
  for key in ('top1_accuracy', 'top5_accuracy', 'loss'):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=key)


def test_protocols_differ(experiment):
  """The 10 crops and the scales are really used: not the centre crop."""
  exp, state = experiment
  losses = {
    p: evaluator.ImageSetEvaluator(
      exp.config.data, model=exp.model, batch_size=16, protocol=p, split='train'
    )(state)['loss']
    for p in image_sets.PROTOCOLS
  }
  assert len({round(v, 6) for v in losses.values()}) == 3, losses


def test_evaluate_cli_two_processes_count_uneven_shards_once(tmp_path):
  """41 validation images over 2 processes (21 and 20, so unequal numbers
  of batches): both processes finish and the result equals one process's.
  Then BN re-estimation and the centre crop from the CLI."""
  root = tmp_path / 'folder'
  shutil.copytree(FOLDER, root)
  shutil.copytree(root / 'train', root / 'val')
  first = next((root / 'val' / 'n01440764').glob('*.JPEG'))
  shutil.copy(first, first.with_name('copy.JPEG'))
  workdir = tmp_path / 'run'
  config = small_config(root, eval_on='none')
  loop.train_and_evaluate(config, str(workdir))
  flags = [
    '--config.data.eval_protocol=multiscale',
    '--config.train.eval_batch_size=4',
  ]

  two = start_two_processes(
    flags, workdir, command=('-m', 'resnet_jax.evaluate')
  )
  outputs = [p.communicate(timeout=300) for p in two]
  for p, (_, stderr) in zip(two, outputs):
    assert p.returncode == 0, stderr[-3000:]
  results = [json.loads(o.splitlines()[-1]) for o, _ in outputs]
  # One process, in-process on its 8 devices (batches of 8: the sums do
  # not depend on how the images are batched).
  from resnet_jax.eval import saved_run
  from resnet_jax.run import saved

  config = saved.saved_config(str(workdir))
  config.data.eval_protocol = 'multiscale'
  config.train.eval_batch_size = 8
  single = saved_run.evaluate_workdir(config, str(workdir))
  assert results[0] == results[1]
  assert single['num_examples'] == results[0]['num_examples'] == 41
  assert single['protocol'] == 'multiscale' and single['step'] == 2
  np.testing.assert_allclose(results[0]['loss'], single['loss'], rtol=1e-5)

  reestimated = saved_run.evaluate_workdir(
    saved.saved_config(str(workdir)), str(workdir), recompute_bn_batches=2
  )
  assert reestimated['protocol'] == 'center'
  assert reestimated['num_examples'] == 41
  assert np.isfinite(reestimated['loss'])


def test_benchmark_times_the_streaming_loop_and_bare_step():
  """The benchmark on an ImageNet config whose durations are in epochs:
  it runs the loop for a few steps and the step on one resident batch."""
  from resnet_jax.train import benchmark

  config = small_config(FOLDER, eval_on='none')
  config.train.update(unit='epochs', length=90, log_every=0.02)
  assert benchmark.step_report(config, 2, 1)['step_images_per_sec'] > 0
  assert benchmark.loop_images_per_sec(config, 4, 1) > 0


def test_synthetic_benchmark_reads_no_data(tmp_path):
  """--synthetic (the lent GPUs have no TensorFlow): the step on a random
  batch, with a data folder that does not exist; it is the real step, so
  the loss on that one batch goes down."""
  from resnet_jax.data import inputs
  from resnet_jax.train import benchmark

  config = small_config(str(tmp_path / 'missing'), eval_on='none')
  config.optim.lr = 0.01
  assert (
    benchmark.step_report(config, 2, 1, synthetic=True)['step_images_per_sec']
    > 0
  )
  exp = loop.setup(config, data=inputs.Synthetic(config))
  assert exp.steps_per_epoch == 1_281_167 // config.train.batch_size
  step = loop.train_fn(exp, 0)
  state = loop.initial_state(exp)
  losses = []
  for _ in range(4):
    state, metrics = step(state)
    losses.append(float(metrics['loss']))
  assert losses[-1] < losses[0]
