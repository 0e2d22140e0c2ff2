"""Per-stage output shape, parameters and multiply-accumulates of a network.

  python -m resnet_jax.summary --config=configs/imagenet.py:resnet50 [--json]

Parameters are the trainable ones (conv and dense kernels and biases, BN
scale and bias), not BN running statistics. MACs are the forward
multiply-accumulates of convs and dense layers for one image, counted the
way the paper's Table 1 counts them: every kernel tap, padding included.
XLA's cost analysis (and so flax's `tabulate`) skips taps that fall on
padding, which undercounts the 8x8 CIFAR stage by 16%, so we read each
conv's real shapes through a flax interceptor instead of using its number.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from resnet_jax import command

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = flags.FLAGS.config
  # JAX from here on: --help and a refused flag or config never import it.
  from resnet_jax.model import resnet
  from resnet_jax.model.counting import count
  from resnet_jax.model.counting import format_table

  model = resnet.build(config.model, config.data.num_classes)
  summary = count(model, config.data.image_size)
  if flags.FLAGS.json:
    print(json.dumps(dict(summary, image_size=config.data.image_size)))
  else:
    print(format_table(summary))


def cli():
  """The command (its console script, and `python -m`)."""
  # Defined here, not at import: benchmark.py imports count() and has its
  # own --config.
  config_flags.DEFINE_config_file('config', None, 'Config file.')
  flags.DEFINE_bool('json', False, 'Print one JSON object instead.')
  flags.mark_flag_as_required('config')
  command.run(main)


if __name__ == '__main__':
  cli()
