"""'Bag of Tricks for Image Classification with Convolutional Neural
Networks' (He, Zhang et al., CVPR 2019) on ImageNet: ResNet-50 from its
baseline to the refined recipe, one trick added per row (Tables 3-6).

Argument: a row, each adding its tricks to the rows before it, then
optionally family=cifar for the same ablation on CIFAR-10 (a ResNet-20,
which runs on a laptop; see below).

  baseline         ResNet-50 (v1), batch 256, Nesterov SGD at 0.1 divided
                   by 10 at epochs 30, 60 and 90 of 120, Inception-style
                   crops, flips and PCA lighting, weight decay 1e-4 on all
  efficient        batch 1024, learning rate 0.4 (linear scaling), 5
                   epochs of linear warm-up, zero-initialised last BN of
                   each block, no decay on biases and BN, bfloat16
  resnet_d         ResNet-50-D: stride in the 3x3 (ResNet-B), the deep
                   stem (ResNet-C), the average-pooled shortcut (D)
  cosine           cosine learning-rate decay
  label_smoothing  label smoothing 0.1
  distill          knowledge distillation (label_smoothing's recipe, no
                   mixup): T = 20, from the teacher in train.teacher
  mixup            mixup with alpha 0.2 (label_smoothing's recipe, no
                   distillation), and 200 epochs instead of 120
  mixup_distill    mixup and distillation
  teacher          the teacher: ResNet-152-D with label_smoothing's
                   recipe (section 5.3: cosine decay, label smoothing)

The distillation rows need train.teacher=DIR, the workdir of a trained
teacher (the teacher row, or any run of ours or torchvision's through
resnet_jax.convert, on ImageNet's 1,000 classes); reproduce trains the
teacher row first and gives each seed's students its workdir.

  python -m resnet_jax.reproduce bag_of_tricks --workdir=runs/bot \\
      --set=data.image_folder=/data/imagenet
  python train.py --config=configs/bag_of_tricks.py:cosine \\
      --config.data.image_folder=/data/imagenet --workdir=runs/bot_cosine

The paper's top-1 validation accuracy, centre 224 crop (error = 100 -
accuracy): baseline 75.87 (He et al. 2015's own ResNet-50: 75.3),
efficient 76.21, resnet_d 77.16, cosine 77.91, label_smoothing 78.31,
mixup 79.15; knowledge distillation from the ResNet-152-D teacher gives
78.67 without mixup and 79.29 with it, the paper's headline number.

As the paper and its authors' GluonCV code: the distillation loss is
0.5 x the (smoothed, mixed) labels' cross-entropy + 0.5 x T^2 x the
cross-entropy of the student's softmax(z / T) against the teacher's
softmax(r / T) (GluonCV's hard_weight 0.5; the paper writes the sum
without the halves, which doubles the learning rate's effect); the
teacher sees the same mixed images. The cosine decay runs over
the epochs after the warm-up (from the peak at epoch 5 to 0 at the end),
and mixup draws one weight per batch (data.mix_lambda='batch'), each
image mixed with the one at the mirrored place of the global batch.
Where this config differs from the paper: He (MSRA) initialisation
rather than Xavier's; no random hue/saturation/brightness jitter; the
channel means subtracted are estimated from data.mean_images training
crops (the paper subtracts ImageNet's 123.68, 116.779, 103.939, which
such an estimate comes close to), then divided by the paper's standard
deviations, 58.393, 57.12, 57.375. None of these rows has been run here:
they need ImageNet and GPUs.

family=cifar: the ablation on CIFAR-10 with the paper's ResNet-20 and its
section 4.2 recipe (batch 128, 64k iterations) as the baseline; the rows
add no-bias-decay, zero-initialised BN and 400 iterations of linear
warm-up (efficient; the batch stays 128), shortcut D (resnet_d: CIFAR nets
have neither bottleneck strides nor a 7x7 stem), cosine decay, label
smoothing 0.1 and mixup 0.2 (for as many iterations); its teacher is a
ResNet-110 (shortcut D) with label_smoothing's recipe. The paper has no
CIFAR numbers; `reproduce bag_of_tricks_cifar --steps_scale=0.01` runs it
in under an hour on two CPU cores.
"""

import importlib.util
import os

from ml_collections import config_dict

from resnet_jax.errors import ConfigError

# Each row's tricks: the ablation of Tables 3-6, one trick added a row;
# distillation and mixup each on label_smoothing's recipe, then both.
_STEPS = ('efficient', 'resnet_d', 'cosine', 'label_smoothing')
TRICKS = {
  'baseline': (),
  **{row: _STEPS[: i + 1] for i, row in enumerate(_STEPS)},
  'distill': (*_STEPS, 'distill'),
  'mixup': (*_STEPS, 'mixup'),
  'mixup_distill': (*_STEPS, 'mixup', 'distill'),
  'teacher': _STEPS,  # and 152 layers
}
ROWS = tuple(TRICKS)
TEMPERATURE = 20  # section 5.3
HERE = os.path.dirname(os.path.abspath(__file__))


def _config_file(name: str):
  spec = importlib.util.spec_from_file_location(
    f'{name}_config', os.path.join(HERE, f'{name}.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = 'mixup') -> config_dict.ConfigDict:
  row, _, rest = arg.partition(',')
  if row not in ROWS:
    raise ConfigError(f'row {row!r} is not one of {", ".join(ROWS)}')
  family = 'imagenet'
  if rest:
    if rest not in ('family=cifar', 'family=imagenet'):
      raise ConfigError(f'{rest!r}: the only option is family=cifar')
    family = rest.partition('=')[2]
  upto = TRICKS[row]
  config = (_cifar if family == 'cifar' else _imagenet)(upto, row == 'teacher')
  if 'distill' in upto:
    # '' (not None): this row distils, and refuses to start until
    # train.teacher names the teacher's workdir.
    config.train.teacher = ''
    config.optim.distill_temperature = TEMPERATURE
  return config


def _imagenet(upto, teacher: bool = False) -> config_dict.ConfigDict:
  depth = 152 if teacher else 50
  net = f'resnet{depth},stride=v1.5,stem=deep,shortcut=D'
  config = _config_file('imagenet').get_config(
    net if 'resnet_d' in upto else f'resnet{depth}'
  )
  d, o, t, m = config.data, config.optim, config.train, config.model
  # The paper's baseline (section 2).
  d.train_crop = 'inception'
  d.mean = 'channel'
  m.input_scale = (58.393, 57.12, 57.375)  # with the channel means
  o.nesterov = True
  o.lr_boundaries = (30, 60, 90)
  o.warmup = 'linear'
  t.length = 120
  if 'efficient' in upto:  # section 3
    t.batch_size = 1024
    o.linear_scaling = True  # 0.1 x 1024 / 256
    o.warmup_steps = 5
    m.zero_init_residual = True
    o.weight_decay_on = 'kernels'
    m.dtype = 'bfloat16'
  if 'cosine' in upto:  # section 5.1
    o.schedule = 'cosine'
  if 'label_smoothing' in upto:  # section 5.2
    o.label_smoothing = 0.1
  if 'mixup' in upto:  # section 5.4
    d.mixup_alpha = 0.2
    d.mix_lambda = 'batch'  # one weight a batch, as the authors' code
    t.length = 200
  return config


def _cifar(upto, teacher: bool = False) -> config_dict.ConfigDict:
  net = 'resnet110' if teacher else 'resnet20'
  config = _config_file('cifar10').get_config(
    f'{net},shortcut=D' if 'resnet_d' in upto else net
  )
  d, o, m = config.data, config.optim, config.model
  if 'efficient' in upto:
    m.zero_init_residual = True
    o.weight_decay_on = 'kernels'
    o.warmup, o.warmup_steps = 'linear', 400
  if 'cosine' in upto:
    o.schedule = 'cosine'
  if 'label_smoothing' in upto:
    o.label_smoothing = 0.1
  if 'mixup' in upto:
    d.mixup_alpha = 0.2
    d.mix_lambda = 'batch'
  return config
