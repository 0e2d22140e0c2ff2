"""Trains and evaluates a network from a config file.

  python -m resnet_jax.train --config=configs/cifar10.py:resnet20 \
      --workdir=runs/r20
  resnet-jax-train --config=cifar10:resnet110 --workdir=runs/r110

--config is a config file's path, or a built-in config by name
(quickstart, cifar10, cifar100, imagenet, finetune), then `:ARG`.
Running the same command again resumes from WORKDIR/checkpoints.
"""

import json

from absl import flags
from ml_collections import config_flags

from resnet_jax import command
from resnet_jax import errors

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  # JAX from here on: --help and a refused flag or config never import it.
  from resnet_jax import processes
  from resnet_jax.train import loop

  processes.start()
  result = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(json.dumps(result, sort_keys=True))  # the run's last stdout line


def cli():
  """The command (its console script, `python -m` and train.py)."""
  config_flags.DEFINE_config_file('config', None, 'Config file.')
  flags.DEFINE_string('workdir', None, 'Checkpoints, logs, metrics.')
  flags.mark_flags_as_required(['config', 'workdir'])
  command.run(main)


if __name__ == '__main__':
  cli()
