"""Evaluates the latest checkpoint of a workdir with the workdir's config.

  python -m resnet_jax.evaluate --workdir=DIR
  python -m resnet_jax.evaluate --workdir=DIR --config.data.local_dir=OTHER
  python -m resnet_jax.evaluate --workdir=DIR --recompute_bn_batches=100

Overrides apply on top of DIR/config.json. The images are normalised with
the training mean saved in the checkpoint, so OTHER may hold only a
test_batch.bin. The last stdout line is one JSON object with
top1_accuracy, top5_accuracy, loss, num_examples and step.
"""

import json
import os
import sys

from absl import flags
import jax
from ml_collections import config_dict
from ml_collections import config_flags

from resnet_jax import augment
from resnet_jax import checkpoint
from resnet_jax import cifar_data
from resnet_jax import errors
from resnet_jax import eval_lib
from resnet_jax import models
from resnet_jax import optim
from resnet_jax import resume
from resnet_jax import steps
from resnet_jax import train_lib
from resnet_jax.errors import ConfigError

_WORKDIR = flags.DEFINE_string('workdir', None, "A training run's workdir.")
_RECOMPUTE_BN = flags.DEFINE_integer(
  'recompute_bn_batches',
  0,
  'Re-estimate BN statistics as the average over this many training '
  'batches before testing (needs the training data); 0 keeps the moving '
  'averages.',
)


def saved_config(workdir: str) -> config_dict.ConfigDict:
  """DIR/config.json as a ConfigDict. Keys saved as null are the config
  files' optional strings (paths, shortcut), so they stay overridable."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise ConfigError(
      f"{path} not found: --workdir must be a training run's directory"
    )
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f'{path} is not valid JSON ({e})') from e

  def convert(tree):
    return config_dict.ConfigDict(
      {
        k: convert(v)
        if isinstance(v, dict)
        else config_dict.placeholder(str)
        if v is None
        else tuple(v)
        if isinstance(v, list)
        else v
        for k, v in tree.items()
      }
    )

  return convert(raw)


def _recompute_bn(config, state, model, num_batches: int):
  """BN statistics from `num_batches` training batches (CIFAR), augmented
  as in training; the training data must be available."""
  train = cifar_data.load(config.data).train
  key = jax.random.key(config.train.seed)
  batch = config.train.batch_size
  positions = jax.numpy.arange(batch)
  batches = (
    augment.train_batch(
      train.images,
      train.labels,
      state.pixel_mean,
      key,
      step,
      batch,
      positions,
      config.data.augment,
    )[0]
    for step in range(num_batches)
  )
  return eval_lib.recompute_batch_stats(state, model, batches)


def evaluate_workdir(
  config, workdir: str, recompute_bn_batches: int = 0
) -> dict:
  """Metrics of the latest checkpoint in `workdir` on its eval split."""
  if config.data.name not in cifar_data.LABEL_BYTES:
    raise ConfigError(
      f'evaluating a {config.data.name} workdir is not supported yet: its '
      'training run reports centre-crop validation in metrics.jsonl'
    )
  mesh = steps.make_mesh()
  batch = config.train.eval_batch_size
  if batch <= 0 or batch % mesh.size:
    raise ConfigError(
      f'train.eval_batch_size={batch} does not divide over {mesh.size} devices'
    )
  model = models.build(config.model, config.data.num_classes)
  split, _ = cifar_data.load_eval(config.data)
  shape = split.images.shape[1:]
  params = jax.eval_shape(
    model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *shape), 'float32')
  )
  # The optimizer only shapes the checkpoint here: one step per epoch will do.
  tx, _ = optim.optimizer(config, params['params'], steps_per_epoch=1)
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise ConfigError(f'no checkpoint in {directory}')
  mgr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  state = resume.restore_newest_readable(
    mgr, train_lib.abstract_state(model, tx, shape, mesh), directory
  )
  if state is None:
    raise ConfigError(f'no checkpoint in {directory}')
  if recompute_bn_batches:
    state = _recompute_bn(config, state, model, recompute_bn_batches)
  result = eval_lib.evaluate(
    state, split, mesh=mesh, model=model, batch_size=batch
  )
  result['step'] = int(jax.device_get(state.step))
  return result


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = flags.FLAGS.config
  result = evaluate_workdir(config, _WORKDIR.value, _RECOMPUTE_BN.value)
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
    base = saved_config(_workdir_from_argv(sys.argv))
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  config_flags.DEFINE_config_dict('config', base, 'Overrides of config.json.')
  errors.run(main)
