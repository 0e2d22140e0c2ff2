"""CIFAR-10 networks of He et al. 2015, section 4.2 (Table 6, Figure 6).

Argument: resnetN or plainN with N = 6n+2 (20, 32, 44, 56, 110, 1202), then
options: shortcut=A|B|C|D, block=standard|preact, dtype=float32|bfloat16.

  python -m resnet_jax.summary --config=configs/cifar10.py:resnet110
  python -m resnet_jax.summary --config=configs/cifar10.py:resnet20,shortcut=B

ResNet-20 has 269,722 parameters and 40.6M multiply-accumulates per image.
"""

from ml_collections import config_dict

from resnet_jax import config_args


def get_config(arg: str = 'resnet20') -> config_dict.ConfigDict:
  config = config_dict.ConfigDict()
  config.model = config_args.model_config(arg, family='cifar')

  config.data = config_dict.ConfigDict()
  config.data.name = 'cifar10'
  config.data.num_classes = 10
  config.data.image_size = 32  # the paper trains and tests on 32x32 images
  return config
