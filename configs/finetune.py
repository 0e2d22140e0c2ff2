"""Fine-tuning a pretrained ResNet on your own images (transfer learning;
not an experiment of the paper).

Argument: the source run's network as in configs/imagenet.py (torchvision's
ResNet-50 is resnet50,stride=v1.5), then mode=full (the default: every
layer trains, the backbone at backbone_lr_scale of the head's learning
rate) or mode=linear_probe (only the new head trains; the backbone and its
BN statistics stay frozen), and family=cifar for a CIFAR-trained source.

  python -m resnet_jax.convert --torch_checkpoint=resnet50-11ad3fa6.pth \
      --config=configs/imagenet.py:resnet50,stride=v1.5 --workdir=runs/r50_tv
  python train.py --config=configs/finetune.py:resnet50,stride=v1.5 \
      --config.finetune.init_from=runs/r50_tv \
      --config.data.image_folder=/data/flowers --config.data.num_classes=5 \
      --workdir=runs/flowers
  python train.py \
      --config=configs/finetune.py:resnet50,stride=v1.5,mode=linear_probe \
      --config.finetune.init_from=runs/r50_tv \
      --config.data.name=oxford_flowers102 --config.data.num_classes=102 \
      --workdir=runs/flowers102_probe

The weights (all but the head), BN statistics and input normalisation come
from finetune.init_from (resnet_jax/train/finetune.py). The recipe: batch
64, SGD momentum 0.9, weight decay 1e-4, cosine decay over 30 epochs from 0.01
(full) or 0.1 (linear probe), Inception crops and flips, centre-crop
evaluation on val/ of the folder or data.val_split of the tfds dataset.
"""

from ml_collections import config_dict

from resnet_jax.config import arguments
from resnet_jax.config import keys
from resnet_jax.errors import ConfigError

MODES = ('full', 'linear_probe')


def get_config(arg: str = 'resnet50,stride=v1.5') -> config_dict.ConfigDict:
  name, _, rest = arg.partition(',')
  options, mode, family = [], 'full', 'imagenet'
  for option in (o for o in rest.split(',') if o):  # ours, not the model's
    if option.startswith('mode='):
      mode = option.partition('=')[2]
    elif option.startswith('family='):
      family = option.partition('=')[2]
    else:
      options.append(option)
  if mode not in MODES:
    raise ConfigError(f'mode={mode!r} is not one of {", ".join(MODES)}')
  if family not in ('imagenet', 'cifar'):
    raise ConfigError(f'family={family!r} is not one of imagenet, cifar')
  config = config_dict.ConfigDict()
  config.model = arguments.model_config(
    ','.join([name, *options]), family=family
  )

  config.finetune = ft = config_dict.ConfigDict()
  # The run to start from: a workdir of train.py or of resnet_jax.convert.
  ft.init_from = config_dict.placeholder(str)
  ft.mode = mode
  ft.backbone_lr_scale = 0.1  # mode=full: the backbone's lr / the head's

  config.data = data = config_dict.ConfigDict()
  # A tfds image classification dataset (e.g. oxford_flowers102), or None
  # with image_folder: ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg.
  data.name = config_dict.placeholder(str)
  data.image_folder = config_dict.placeholder(str)
  data.num_classes = config_dict.placeholder(int)  # the new head's size
  data.image_size = 224 if family == 'imagenet' else 32
  data.tfds_data_dir = config_dict.placeholder(str)  # None: $TFDS_DATA_DIR
  data.manual_dir = config_dict.placeholder(str)  # tfds' manual downloads
  # tfds splits; never tune on the test split: train[:90%] and train[90%:]
  # hold out part of the training data where there is no validation split.
  data.train_split = 'train'
  data.val_split = 'validation'
  data.train_crop = 'inception'  # or 'scale' (the paper's)
  side = data.image_size
  data.scale_range = (round(side * 8 / 7), round(side * 15 / 7))
  data.lighting_std = 0.0
  data.mean = 'channel'  # replaced by the source's (finetune.inherit)
  data.mean_images = 0  # unused: the source's mean is kept
  data.shuffle_buffer = 16384  # tfds records; folders are permuted whole
  data.eval_on = 'val'  # or 'none'
  data.eval_protocol = 'center'  # or 'ten_crop', 'multiscale'
  data.eval_scales = (224, 256, 384, 480, 640)

  config.optim = optim = config_dict.ConfigDict()
  optim.lr = 0.01 if mode == 'full' else 0.1  # the head's
  optim.momentum = 0.9
  optim.nesterov = False
  optim.weight_decay = 1e-4
  optim.weight_decay_on = 'all'
  optim.decoupled_weight_decay = False
  optim.schedule = 'cosine'
  optim.lr_boundaries = ()  # schedule='step' only
  optim.lr_decay_factor = 0.1
  optim.warmup = 'linear'
  optim.warmup_steps = 0
  optim.warmup_lr = 0.0
  optim.linear_scaling = False
  optim.base_batch_size = 64

  config.train = train = config_dict.ConfigDict()
  train.unit = 'epochs'
  train.length = 30
  train.batch_size = 64
  train.eval_batch_size = 64
  train.seed = 0
  train.bn_sync = False
  train.log_every = 1
  train.eval_every = 5
  train.checkpoint_every = 1
  train.keep_checkpoints = 2
  train.microbatches = 1
  train.steps_per_dispatch = 1
  keys.add_defaults(config)  # every switch after 2015, off
  return config
