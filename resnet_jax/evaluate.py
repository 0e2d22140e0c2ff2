"""Evaluates the latest checkpoint of a workdir with the workdir's config.

  python -m resnet_jax.evaluate --workdir=DIR
  python -m resnet_jax.evaluate --workdir=DIR --config.data.local_dir=OTHER
  python -m resnet_jax.evaluate --workdir=DIR --recompute_bn_batches=100
  python -m resnet_jax.evaluate --workdir=IMAGENET_RUN \
      --config.data.eval_protocol=ten_crop   # or center, multiscale
  python -m resnet_jax.evaluate --workdir=IMAGENET_RUN --test_set=imagenet_v2 \
      [--test_data=imagenetv2-matched-frequency-format-val]
  python -m resnet_jax.evaluate --workdir=IMAGENET_RUN --test_set=real \
      [--test_data=real.json]

Overrides apply on top of DIR/config.json. The images are normalised with
the training mean saved in the checkpoint, so OTHER may hold only a
test_batch.bin (CIFAR) or only val/ (an ImageNet image folder). CIFAR runs
are tested on their eval split, ImageNet runs on val, or with --test_set
on ImageNet-V2 or the ReaL labels (data/imagenet_variants.py says what
each reads and counts). --weights=ema tests the moving average of the weights. The
last stdout line is one JSON object with top1_accuracy, top1_error,
top5_accuracy, loss, num_examples, step and weights (and the protocol and
test set, for ImageNet).
"""

import json
import sys

from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags

from resnet_jax import command
from resnet_jax.errors import ConfigError
from resnet_jax.run import saved_config


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = flags.FLAGS.config
  # JAX from here on: --help and a refused flag or config never import it.
  from resnet_jax import processes
  from resnet_jax.data import imagenet_variants
  from resnet_jax.eval.saved_run import evaluate_workdir

  processes.start()
  test_set = None
  if flags.FLAGS.test_set:
    test_set = imagenet_variants.TestSet(
      flags.FLAGS.test_set, flags.FLAGS.test_data
    )
  elif flags.FLAGS.test_data:
    raise ConfigError('--test_data needs --test_set=imagenet_v2 or real')
  result = evaluate_workdir(
    config,
    flags.FLAGS.workdir,
    flags.FLAGS.recompute_bn_batches,
    flags.FLAGS.weights,
    test_set,
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


def cli():
  """The command (its console script, and `python -m`)."""
  if any(arg in command.HELP for arg in sys.argv) and not any(
    arg.startswith('--workdir') for arg in sys.argv
  ):
    base = config_dict.ConfigDict()  # help: the run's config is not known
  else:
    try:
      base = saved_config.read(_workdir_from_argv(sys.argv))
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
  flags.DEFINE_string(
    'weights',
    'raw',
    "'raw': the weights as trained; 'ema': their moving average (runs "
    'with train.ema_decay).',
  )
  flags.DEFINE_string(
    'test_set',
    None,
    'ImageNet runs: imagenet_v2 (or imagenet_v2/threshold-0.7, '
    '/topimages) or real (the ReaL labels of val) instead of val.',
  )
  flags.DEFINE_string(
    'test_data',
    None,
    'With --test_set: the ImageNet-V2 folder (DIR/<class index>/*.jpeg) or '
    "ReaL's real.json (with the run's data.image_folder/val); default: "
    'tfds imagenet_v2 or imagenet2012_real.',
  )
  command.run(main)


if __name__ == '__main__':
  cli()
