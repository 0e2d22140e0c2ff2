"""Offline quickstart: ResNet-20 on the 2,000 real CIFAR-10 images bundled
in data/cifar10-sample, in under 3 minutes on two CPU cores.

  python train.py --config=configs/quickstart.py --workdir=/tmp/quickstart

Trains on 1,800 images and reports the accuracy on the 200 held out (chance
is 10%). The paper's recipe, shortened: 560 steps of batch 64 (about 20 epochs),
learning rate 0.1 divided by 10 at 70% and 90% of training.
"""

import importlib.util
import os

from ml_collections import config_dict

from resnet_jax.config import arguments

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg: str = 'resnet20') -> config_dict.ConfigDict:
  spec = importlib.util.spec_from_file_location(
    'cifar10_config', os.path.join(HERE, 'cifar10.py')
  )
  cifar10 = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cifar10)
  config = cifar10.get_config(arg)
  config.data.local_dir = arguments.sample_dir('cifar10-sample')
  config.data.validation_size = 200
  config.data.eval_on = 'validation'
  config.train.batch_size = 64
  config.train.length = 560
  config.optim.lr_boundaries = (392, 504)
  config.train.log_every = 28
  config.train.eval_every = 140
  config.train.checkpoint_every = 280
  config.train.eval_batch_size = 200
  return config
