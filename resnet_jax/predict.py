"""Class predictions of a run: trained here, imported or fine-tuned.

  python -m resnet_jax.predict --workdir=DIR photo.jpg other.png
  python -m resnet_jax.predict --workdir=DIR batch.npy

One JSON line per image. An image file (JPEG, PNG, GIF or BMP) is
prepared as evaluation prepares it (ImageNet-style runs: the centre crop
of data.eval_protocol='center'; CIFAR runs: the whole image resized to
32x32), minus the run's training mean, and gives
{"file", "top5", "names" (where the run's data named its classes),
"probabilities"}. A .npy file is a batch of images already prepared,
NHWC float32 with the training mean subtracted (model.input_scale, the
network's own first step, is not applied), and gives
{"file", "index", "logits"} per image.
"""

import json

from absl import flags

from resnet_jax import command

FLAGS = flags.FLAGS


def main(argv):
  # JAX from here on: --help and a refused flag never import it.
  from resnet_jax.eval.predict import predict

  for record in predict(
    FLAGS.workdir, argv[1:], FLAGS.batch_size, FLAGS.weights
  ):
    print(json.dumps(record))


def cli():
  """The command (its console script, and `python -m`)."""
  flags.DEFINE_string('workdir', None, 'A run directory (train or convert).')
  flags.DEFINE_integer('batch_size', 64, 'Images per forward pass.')
  flags.DEFINE_string(
    'weights', 'raw', "'raw' or 'ema' (the weights' moving average)."
  )
  flags.mark_flag_as_required('workdir')
  command.run(main)


if __name__ == '__main__':
  cli()
