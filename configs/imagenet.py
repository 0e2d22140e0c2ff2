"""ImageNet networks and recipe of He et al. 2015, Table 1 and section 3.4.

Argument: resnet18/34/50/101/152, plain18/34 or resnext50_32x4d, then options:
shortcut=A|B|C|D, stride=v1|v1.5, stem=standard|deep, block=standard|preact,
dtype=..., and schedule=paper (600k iterations, 120 epochs, instead of 90).
ResNet-50-D (He et al. 2019) is resnet50,stride=v1.5,stem=deep,shortcut=D.

  python -m resnet_jax.summary --config=configs/imagenet.py:resnet50
  python train.py --config=configs/imagenet.py:resnet34,shortcut=C \
      --config.data.image_folder=/data/imagenet --workdir=runs/r34c

The recipe: batch 256, SGD momentum 0.9, weight decay 1e-4, learning rate
0.1 divided by 10 at epochs 30 and 60, 90 epochs (the common reading of
the paper's "divide when the error plateaus"); scale augmentation
(shorter side in [256, 480], random 224 crop, flip), per-pixel mean
subtraction and PCA lighting noise. ResNet-50 (v1, option B) has
25,557,032 parameters and 3.86G multiply-accumulates per 224x224 image.
The paper's top-1 10-crop validation errors (Tables 2-3):
ResNet-18 27.88%, ResNet-34 A 25.03% (B 24.52%, C 24.19%), plain-18
27.94%, plain-34 28.54%; README.md lists every row with its commands.
"""

from ml_collections import config_dict

from resnet_jax.config import arguments
from resnet_jax.config import keys


def get_config(arg: str = 'resnet50') -> config_dict.ConfigDict:
  name, _, rest = arg.partition(',')
  options = [o for o in rest.split(',') if o]
  schedule = 'epochs90'
  if 'schedule=paper' in options:  # not a model option: handled here
    options.remove('schedule=paper')
    schedule = 'paper'
  config = config_dict.ConfigDict()
  config.model = arguments.model_config(
    ','.join([name, *options]), family='imagenet'
  )

  config.data = data = config_dict.ConfigDict()
  data.name = 'imagenet2012'
  data.num_classes = 1000
  data.image_size = 224  # the paper's training crop
  # train/<class>/*.jpg and val/<class>/*.jpg; None: tfds imagenet2012.
  data.image_folder = config_dict.placeholder(str)
  # tfds' manual folder (the official tars); None: DATA_DIR/downloads/manual
  data.manual_dir = config_dict.placeholder(str)
  data.tfds_data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR
  # tfds splits (not image folders: train/ and val/ there)
  data.train_split = 'train'
  data.val_split = 'validation'
  data.train_crop = 'scale'  # section 3.4; or 'inception'
  # 'scale': the shorter side resized to a random length in this range,
  # then a random image_size crop (section 3.4).
  data.scale_range = (256, 480)
  data.lighting_std = 0.1  # AlexNet's PCA colour noise; 0 turns it off
  data.mean = 'pixel'  # per-pixel mean subtraction; or 'channel'
  # The mean's sample: this many training images drawn at random over the
  # whole set (10,000 of 1.28M: about 10 from each class).
  data.mean_images = 10000
  # tfds only: records shuffled through this buffer after tfds' per-epoch
  # file order. An image folder needs none: every epoch is a permutation.
  data.shuffle_buffer = 16384
  data.eval_on = 'val'  # or 'none'
  # At every evaluation: 'center' (shorter side 256, centre 224), the
  # paper's 'ten_crop', or its fully-convolutional 'multiscale' test at the
  # shorter sides eval_scales (Table 3's, averaged with their flips).
  data.eval_protocol = 'center'
  data.eval_scales = (224, 256, 384, 480, 640)

  config.optim = optim = config_dict.ConfigDict()
  optim.lr = 0.1
  optim.momentum = 0.9
  optim.nesterov = False
  optim.weight_decay = 1e-4  # L2, added to the gradient (Caffe's SGD)
  optim.weight_decay_on = 'all'  # or 'kernels': no decay on BN and biases
  optim.decoupled_weight_decay = False
  optim.schedule = 'step'  # or 'cosine'
  # Epochs (train.unit): 30/60 of 90; the paper's 600k iterations at batch
  # 256 are 120 epochs, divided at 40 and 80 here.
  optim.lr_boundaries = (30, 60) if schedule == 'epochs90' else (40, 80)
  optim.lr_decay_factor = 0.1
  optim.warmup = 'linear'  # Goyal et al. 2017, for large batches
  optim.warmup_steps = 0  # in epochs; e.g. 5 with linear_scaling
  optim.warmup_lr = 0.01
  optim.linear_scaling = False  # lr *= batch_size / base_batch_size
  optim.base_batch_size = 256

  config.train = train = config_dict.ConfigDict()
  train.unit = 'epochs'  # of every duration below and in optim
  train.length = 90 if schedule == 'epochs90' else 120
  train.batch_size = 256  # global, split over the devices
  train.eval_batch_size = 256
  train.seed = 0
  train.bn_sync = False  # per-device BN statistics, as the paper's GPUs
  train.log_every = 0.02  # epochs: every 100 steps at batch 256
  train.eval_every = 5
  train.checkpoint_every = 0.5
  train.keep_checkpoints = 3
  # Gradient accumulation: each device's batch in this many slices, run
  # one after another; BN statistics per slice, as on that many more
  # devices (README). For a batch-256 recipe on one small GPU.
  train.microbatches = 1
  train.steps_per_dispatch = 1  # >1 only for device-resident data
  keys.add_defaults(config)  # every switch after 2015, off
  return config
