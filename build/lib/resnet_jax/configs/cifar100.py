"""CIFAR-100 with the CIFAR-10 recipe of section 4.2 (not in the paper).

  python train.py --config=configs/cifar100.py:resnet56 --workdir=runs/c100

Arguments and options as configs/cifar10.py; a local folder holds the
official binary train.bin and test.bin.
"""

import importlib.util
import os

from ml_collections import config_dict


def get_config(arg: str = 'resnet20') -> config_dict.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cifar10.py')
  spec = importlib.util.spec_from_file_location('cifar10_config', path)
  cifar10 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cifar10)
  config = cifar10.get_config(arg)
  config.data.name = 'cifar100'
  config.data.num_classes = 100
  return config
