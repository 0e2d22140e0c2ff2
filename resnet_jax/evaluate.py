"""Evaluates the latest checkpoint of a workdir with the workdir's config.

  python -m resnet_jax.evaluate --workdir=DIR
  python -m resnet_jax.evaluate --workdir=DIR --config.data.local_dir=OTHER
  python -m resnet_jax.evaluate --workdir=DIR --recompute_bn_batches=100
  python -m resnet_jax.evaluate --workdir=IMAGENET_RUN \
      --config.data.eval_protocol=ten_crop   # or center, multiscale

Overrides apply on top of DIR/config.json. The images are normalised with
the training mean saved in the checkpoint, so OTHER may hold only a
test_batch.bin (CIFAR) or only val/ (an ImageNet image folder). CIFAR runs
are tested on their eval split, ImageNet runs on val. The last stdout line
is one JSON object with top1_accuracy, top1_error, top5_accuracy, loss,
num_examples and step (and the protocol, for ImageNet).
"""

import json
import sys

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from resnet_jax import errors
from resnet_jax.config import ranges
from resnet_jax.data import augment
from resnet_jax.data import cifar
from resnet_jax.data import image_sets
from resnet_jax.errors import ConfigError
from resnet_jax.eval import evaluator
from resnet_jax.eval import image_evaluator
from resnet_jax.model import resnet
from resnet_jax.run import layout
from resnet_jax.train import loop
from resnet_jax.train import steps


def _cifar_bn_batches(config, state, num_batches: int):
  """Training batches (CIFAR), augmented and normalised as in training;
  the training data must be available."""
  train = cifar.load(config.data).train
  key = jax.random.key(config.train.seed)
  batch = config.train.batch_size
  positions = jax.numpy.arange(batch)
  for step in range(num_batches):
    yield augment.train_batch(
      train.images,
      train.labels,
      state.pixel_mean,
      key,
      step,
      batch,
      positions,
      config.data.augment,
    )[0]


def _imagenet_bn_batches(config, state, num_batches: int, workdir: str):
  """This process's training batches (ImageNet), cropped as in training,
  mean-subtracted, without the lighting noise: the first batches of the
  run's permuted epochs, so drawn at random from the whole training set
  (the files listed in WORKDIR where the run saved them)."""
  d = config.data
  listing = (
    image_sets.training_listing(d.image_folder, workdir)
    if d.image_folder
    else None
  )
  ds = image_sets.train_dataset(
    d, config.train.batch_size, seed=config.train.seed, listing=listing
  )
  mean = np.asarray(jax.device_get(state.pixel_mean))
  for images, _ in ds.take(num_batches).as_numpy_iterator():
    yield images.astype(np.float32) - mean


def evaluate_workdir(
  config, workdir: str, recompute_bn_batches: int = 0
) -> dict:
  """Metrics of the latest checkpoint in `workdir`: CIFAR on its eval
  split, ImageNet on val with data.eval_protocol."""
  ranges.check(config)  # the overrides, too
  # ImageNet, or any image folder or tfds dataset (fine-tuning runs)
  imagenet = not cifar.is_cifar(config.data.name)
  mesh = steps.make_mesh()
  batch = config.train.eval_batch_size
  if batch % mesh.size:
    raise ConfigError(
      f'train.eval_batch_size={batch} does not divide over {mesh.size} devices'
    )
  model = resnet.build(config.model, config.data.num_classes)
  if imagenet:
    images = image_evaluator.Evaluator(
      config.data,
      model=model,
      batch_size=batch,
      protocol=config.data.eval_protocol,
    )
  else:
    split, _ = cifar.load_eval(config.data)
  shape, mean_shape = layout.image_shapes(config)
  state = layout.restore(config, workdir, model, shape, mean_shape, mesh)
  if imagenet:  # each process evaluates on its own devices
    state = image_evaluator.localise(images.mesh, state)
  if recompute_bn_batches:
    if imagenet:
      batches = _imagenet_bn_batches(
        config, state, recompute_bn_batches, workdir
      )
    else:
      batches = _cifar_bn_batches(config, state, recompute_bn_batches)
    state = evaluator.recompute_batch_stats(state, model, batches)
  if imagenet:
    result = images(state)
    result['protocol'] = config.data.eval_protocol
  else:
    result = evaluator.evaluate(
      state, split, mesh=mesh, model=model, batch_size=batch
    )
  result['step'] = int(jax.device_get(state.step))
  return result


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = flags.FLAGS.config
  loop.initialize_distributed()
  result = evaluate_workdir(
    config, flags.FLAGS.workdir, flags.FLAGS.recompute_bn_batches
  )
  print(json.dumps(result, sort_keys=True))


def _workdir_from_argv(argv) -> str:
  """--workdir, read before flag parsing: the saved config defines --config."""
  for i, arg in enumerate(argv):
    if arg.startswith('--workdir='):
      return arg.split('=', 1)[1]
    if arg == '--workdir' and i + 1 < len(argv):
      return argv[i + 1]
  print('error: --workdir=DIR is required', file=sys.stderr)
  sys.exit(2)


if __name__ == '__main__':
  try:
    base = layout.saved_config(_workdir_from_argv(sys.argv))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  config_flags.DEFINE_config_dict('config', base, 'Overrides of config.json.')
  # Defined here, not at import: other commands import this module.
  flags.DEFINE_string('workdir', None, "A training run's workdir.")
  flags.DEFINE_integer(
    'recompute_bn_batches',
    0,
    'Re-estimate BN statistics as the average over this many training '
    'batches before testing (needs the training data); 0 keeps the moving '
    'averages.',
  )
  errors.run(main)
