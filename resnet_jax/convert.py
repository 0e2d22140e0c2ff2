"""torchvision checkpoints in and out of our workdirs.

  python -m resnet_jax.convert --torch_checkpoint=resnet50-11ad3fa6.pth \
      --config=configs/imagenet.py:resnet50,stride=v1.5 --workdir=DIR
  python -m resnet_jax.convert --workdir=DIR --export=resnet50.safetensors

Import writes DIR/config.json (with torchvision's input normalisation:
data.mean='channel' and model.input_scale, see torch_convert) and an
Orbax checkpoint at step 0 that resnet_jax.evaluate reads. Export
writes the latest checkpoint of DIR in torchvision's layout
(.safetensors, or .pth with PyTorch) and prints, as JSON, the
normalisation PyTorch must apply. .pth files are read with PyTorch
(optional); .safetensors files need only the safetensors package.
"""

import json

from absl import flags
from ml_collections import config_flags

from resnet_jax import command
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not FLAGS.workdir:
    raise ConfigError('--workdir=DIR is required')
  if FLAGS.export and FLAGS.torch_checkpoint:
    raise ConfigError('give --torch_checkpoint (import) or --export, not both')
  if not FLAGS.export and (not FLAGS.torch_checkpoint or FLAGS.config is None):
    raise ConfigError(
      'import needs --torch_checkpoint=FILE and --config=...; export needs '
      '--export=FILE'
    )
  # JAX from here on: --help and a refused flag or config never import it.
  from resnet_jax.train import torchvision_io

  if FLAGS.export:
    result = torchvision_io.export_checkpoint(
      FLAGS.workdir, FLAGS.export, FLAGS.weights
    )
  else:
    result = torchvision_io.import_checkpoint(
      FLAGS.config, FLAGS.torch_checkpoint, FLAGS.workdir
    )
  print(json.dumps(result))


def cli():
  """The command (its console script, and `python -m`)."""
  config_flags.DEFINE_config_file('config', None, 'Config file (import).')
  flags.DEFINE_string('workdir', None, 'The run directory.')
  flags.DEFINE_string(
    'torch_checkpoint', None, 'A torchvision .pth or .safetensors to import.'
  )
  flags.DEFINE_string(
    'export', None, 'Write the workdir as FILE (.safetensors or .pth).'
  )
  flags.DEFINE_string(
    'weights', 'raw', "Export: 'raw' or 'ema' (the weights' moving average)."
  )
  command.run(main)


if __name__ == '__main__':
  cli()
