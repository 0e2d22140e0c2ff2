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
from ml_collections import config_dict
from ml_collections import config_flags

from resnet_jax import errors
from resnet_jax.errors import ConfigError
from resnet_jax.eval.saved_run import evaluate_workdir
from resnet_jax.run import saved
from resnet_jax.train import loop


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = flags.FLAGS.config
  loop.initialize_distributed()
  result = evaluate_workdir(
    config,
    flags.FLAGS.workdir,
    flags.FLAGS.recompute_bn_batches,
    flags.FLAGS.weights,
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
  if any(arg in errors.HELP for arg in sys.argv) and not any(
    arg.startswith('--workdir') for arg in sys.argv
  ):
    base = config_dict.ConfigDict()  # help: the run's config is not known
  else:
    try:
      base = saved.saved_config(_workdir_from_argv(sys.argv))
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
  errors.run(main)


if __name__ == '__main__':
  cli()
