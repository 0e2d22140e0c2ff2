"""Trains and evaluates a network from a config file.

  python train.py --config=configs/cifar10.py:resnet20 --workdir=runs/r20

Running the same command again resumes from WORKDIR/checkpoints.
"""

from absl import flags
from ml_collections import config_flags

from resnet_jax import errors
from resnet_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, logs, metrics.')


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  loop.initialize_distributed()
  result = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(loop.summary_line(result))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  errors.run(main)
