"""Which inputs a config's data.name selects: the CIFAR names are held
whole on the device (data/cifar.py); every other name is an image set
streamed from the host (data/image_sets.py). Here, below data/ and run/,
so that reading a workdir needs no input module."""

CIFAR = ('cifar10', 'cifar100')


def is_cifar(data_name: str | None) -> bool:
  """Whether a config's data.name is CIFAR (held on the device) rather
  than an image set streamed from the host."""
  return data_name in CIFAR
