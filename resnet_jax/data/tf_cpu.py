"""TensorFlow and tensorflow-datasets, for tf.data on the CPU only.

Imported where a tf.data path starts (ImageNet and image folders, tfds
datasets, AutoAugment, the test sets read through tfds), never at the
package's import: CIFAR from its binary files or arrays, training,
evaluating and predicting on it, the synthetic benchmark, summary and
convert all run where TensorFlow is not installed (NVIDIA's JAX
containers, say). Reaching a tf.data path there ends in one line saying
what to install.
"""

from resnet_jax.errors import ConfigError

INSTALL = (
  "pip install 'tensorflow-cpu>=2.21,<2.22' "
  "'tensorflow-datasets>=4.9.10,<4.10'"
)


class MissingTensorFlow(ConfigError):
  """A tf.data path in an environment without TensorFlow."""

  def __init__(self, package: str):
    super().__init__(
      f'this input is read through tf.data, which needs {package} (not '
      f'installed here; CIFAR from its binary files does not): {INSTALL}'
    )


def tensorflow():
  """The tensorflow module, kept off every accelerator: JAX has them."""
  try:
    import tensorflow as tf
  except ImportError as e:
    raise MissingTensorFlow('tensorflow') from e
  tf.config.set_visible_devices([], 'GPU')
  return tf


def datasets():
  """The tensorflow_datasets module (TensorFlow kept on the CPU first)."""
  tensorflow()
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise MissingTensorFlow('tensorflow-datasets') from e
  return tfds
