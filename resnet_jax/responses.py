"""Figure 7 of the paper: the standard deviation of each 3x3 layer's
response, for a trained CIFAR run.

  python -m resnet_jax.responses --workdir=RUN  # writes RUN/responses.json

A response is the output of a 3x3 layer after its BN and before the ReLU
or the addition (section 4.2), at the run's latest checkpoint, in
inference mode (BN with its moving averages), on up to --images images of
the run's evaluation split. Its std is taken per channel over images and
positions and averaged over the channels, so that BN's learned per-channel
shift does not count as spread. Layers are the blocks' 3x3 convolutions
in network order (the stem's is left out, as the paper's Figure 7 counts
the stacked layers); a ResNet-20 has 18, a ResNet-56 54.
"""

import json

from absl import flags

from resnet_jax import command
from resnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  # JAX from here on: --help and a refused flag never import it.
  from resnet_jax.paper.responses import workdir_responses

  print(json.dumps(workdir_responses(FLAGS.workdir, FLAGS.images)))


def cli():
  """The command (its console script, and `python -m`)."""
  flags.DEFINE_string('workdir', None, "A CIFAR training run's workdir.")
  flags.DEFINE_integer('images', 500, 'Evaluation images to use.')
  flags.mark_flag_as_required('workdir')
  command.run(main)


if __name__ == '__main__':
  cli()
