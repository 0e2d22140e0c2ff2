"""CIFAR-10 experiments of He et al. 2015, section 4.2 (Table 6, Figure 6).

Argument: resnetN or plainN with N = 6n+2 (20, 32, 44, 56, 110, 1202), then
options: shortcut=A|B|C|D, block=standard|preact, dtype=float32|bfloat16.

  python train.py --config=configs/cifar10.py:resnet20 --workdir=runs/r20
  python train.py --config=configs/cifar10.py:resnet110 --workdir=runs/r110
  python train.py --config=configs/cifar10.py:plain56 --workdir=runs/p56
  python train.py --config=configs/cifar10.py:resnet20,shortcut=B \
      --workdir=runs/r20b --config.optim.lr=0.05

The recipe: batch 128, SGD momentum 0.9, weight decay 1e-4, learning rate
0.1 divided by 10 at 32k and 48k iterations, 64k iterations; ResNet-110 and
deeper start at 0.01 for 400 iterations. Training on 45k/5k train/val
with --config.data.validation_size=5000 --config.data.eval_on=validation.
The paper's test errors (Table 6): ResNet-20 8.75%, -32 7.51%, -44 7.17%,
-56 6.97%, -110 6.43% (6.61 +- 0.16 over 5 runs), -1202 7.93%.
"""

from ml_collections import config_dict

from resnet_jax.config import arguments
from resnet_jax.config import keys


def get_config(arg: str = 'resnet20') -> config_dict.ConfigDict:
  config = config_dict.ConfigDict()
  config.model = arguments.model_config(arg, family='cifar')

  config.data = data = config_dict.ConfigDict()
  data.name = 'cifar10'  # tfds name: 'cifar10' or 'cifar100'
  data.num_classes = 10
  data.image_size = 32  # the paper trains and tests on 32x32 images
  # A folder in the official binary layout (data_batch_*.bin, test_batch.bin);
  # None: tensorflow-datasets.
  data.local_dir = config_dict.placeholder(str)
  data.tfds_data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR
  data.download = True  # let tfds download and prepare on first use
  data.validation_size = 0  # 5000: the paper's 45k/5k split
  data.eval_on = 'test'  # 'test', 'validation' or 'none'
  data.augment = True  # 4-pixel pad, random 32x32 crop, random flip

  config.optim = optim = config_dict.ConfigDict()
  optim.lr = 0.1
  optim.momentum = 0.9
  optim.nesterov = False
  optim.weight_decay = 1e-4  # L2, added to the gradient (Caffe's SGD)
  optim.weight_decay_on = 'all'  # or 'kernels': no decay on BN and biases
  optim.decoupled_weight_decay = False  # True: SGDW, decay after momentum
  optim.schedule = 'step'  # or 'cosine'
  optim.lr_boundaries = (32000, 48000)  # divide by 10 here (train.unit)
  optim.lr_decay_factor = 0.1
  deep = config.model.depth >= 110  # section 4.2: warm up ResNet-110
  optim.warmup = 'constant'  # 'constant': warmup_lr; 'linear': ramp to lr
  optim.warmup_steps = 400 if deep else 0  # until training error < 80%
  optim.warmup_lr = 0.01
  optim.linear_scaling = False  # lr *= batch_size / base_batch_size
  optim.base_batch_size = 128

  config.train = train = config_dict.ConfigDict()
  train.unit = 'steps'  # of every duration below and in optim
  train.length = 64000  # iterations: 64k at batch 128 (~164 epochs of 50k)
  train.batch_size = 128  # global, split over the devices
  train.eval_batch_size = 1000
  train.seed = 0  # initialisation, batch order and augmentation
  train.bn_sync = False  # False: per-device BN statistics, as pmap had
  train.log_every = 100
  train.eval_every = 4000
  train.checkpoint_every = 2000
  train.keep_checkpoints = 3
  # Gradient accumulation: each device's batch in this many slices, run
  # one after another; BN statistics per slice, as on that many more
  # devices (README). For a batch-256 recipe on one small GPU.
  train.microbatches = 1
  # SGD steps per compiled call (a scan): small CIFAR steps are dominated
  # by launch overhead; results are the same for any value.
  train.steps_per_dispatch = 1
  keys.add_defaults(config)  # every switch after 2015, off
  return config
