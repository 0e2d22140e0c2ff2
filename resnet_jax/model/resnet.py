"""Every network of "Deep Residual Learning for Image Recognition" (2015).

One generic `ResNet`; the paper's networks are one-line partials below that
read like its tables (CIFAR: section 4.2; ImageNet: Table 1). Defaults are
the paper's: v1 bottlenecks (stride in the first 1x1), post-activation
blocks, He-normal fan-in init, BN momentum 0.9 (PyTorch's 0.1) and epsilon
1e-5, last BN of each branch initialised to one (not zero). `shortcut=None`
gives the plain nets, which have no shortcut at all.
"""

import functools
from typing import Any
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.errors import ConfigError
from resnet_jax.model import blocks
from resnet_jax.model import options

ModuleDef = Any
partial = functools.partial

CIFAR_WIDTHS = (16, 32, 64)
IMAGENET_BASIC_WIDTHS = (64, 128, 256, 512)
IMAGENET_BOTTLENECK_WIDTHS = (256, 512, 1024, 2048)  # 4x expansion
IMAGENET_STAGES = {  # Table 1: depth -> (bottleneck?, blocks per stage)
  18: (False, (2, 2, 2, 2)),
  34: (False, (3, 4, 6, 3)),
  50: (True, (3, 4, 6, 3)),
  101: (True, (3, 4, 23, 3)),
  152: (True, (3, 8, 36, 3)),
}
INIT_MODES = ('fan_in', 'fan_out')
DTYPES = {name: getattr(jnp, name) for name in options.DTYPES}


def he_normal(mode: str = 'fan_in'):
  """MSRA init, std = sqrt(2 / fan): untruncated, like Caffe's filler."""
  return nn.initializers.variance_scaling(2.0, mode, 'normal')


def conv_padded(features, kernel_size, strides=1, **kwargs):
  """A bias-free conv padded by k // 2 on every side, as Caffe and PyTorch
  pad (XLA's 'SAME' pads stride-2 convs on one side only)."""
  padding = [(k // 2, k // 2) for k in kernel_size]
  return nn.Conv(
    features, kernel_size, strides, padding=padding, use_bias=False, **kwargs
  )


class ResNet(nn.Module):
  """A residual (or plain) network.

  The stem is 'cifar' (3x3 conv, 16 filters) or 'imagenet' (7x7/2 conv, 64
  filters, 3x3/2 max pool). Stage i > 1 halves the map in its first block.
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  stage_widths: Sequence[int]  # output width of each stage's blocks
  stem: str
  stem_width: int
  num_classes: int
  shortcut: str | None  # 'A' / 'B' / 'C' / 'D'; None: a plain net
  stride_in: str = 'v1'  # bottlenecks only: 'v1' (paper) or 'v1.5'
  # ImageNet stems only: three 3x3 convs (stem_width/2, /2, stem_width; the
  # first stride 2) instead of the 7x7, ResNet-C of He et al. 2019.
  deep_stem: bool = False
  cardinality: int = 1  # bottlenecks only: ResNeXt groups
  base_width: int = 64  # bottlenecks only: ResNeXt width per group
  zero_init_last_bn: bool = False
  init_mode: str = 'fan_in'
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  bn_axis_name: str | None = None  # set to the mesh axis to sync BN stats
  dtype: Any = jnp.float32  # compute dtype; params and BN stats stay f32
  remat: bool = False  # recompute block activations in the backward pass
  input_scale: tuple = (1.0, 1.0, 1.0)  # per-channel divisor of the input
  # Frozen BN (torchvision's FrozenBatchNorm2d): normalise with the running
  # statistics in training too, and leave them as they are.
  bn_frozen: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = partial(
      conv_padded,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      kernel_init=he_normal(self.init_mode),
    )
    norm = partial(
      nn.BatchNorm,
      use_running_average=not train or self.bn_frozen,
      momentum=self.bn_momentum,
      epsilon=self.bn_epsilon,
      dtype=self.dtype,
      param_dtype=jnp.float32,
      axis_name=self.bn_axis_name,
    )
    preact = self.block_cls in (
      blocks.PreActBasicBlock,
      blocks.PreActBottleneckBlock,
    )
    if tuple(self.input_scale) != (1.0, 1.0, 1.0):  # none: the paper
      x = x / jnp.asarray(self.input_scale, x.dtype)
    x = x.astype(self.dtype)
    if self.stem == 'cifar':
      x = conv(self.stem_width, (3, 3), name='conv_init')(x)
      if not preact:  # a pre-activation first block normalises it itself
        x = nn.relu(norm(name='bn_init')(x))
    elif self.deep_stem:
      half = self.stem_width // 2
      for i, (width, stride) in enumerate(
        ((half, 2), (half, 1), (self.stem_width, 1)), start=1
      ):
        x = conv(width, (3, 3), stride, name=f'conv_init{i}')(x)
        x = nn.relu(norm(name=f'bn_init{i}')(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.stem_width, (7, 7), 2, name='conv_init')(x)
      x = nn.relu(norm(name='bn_init')(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))

    block_kwargs = {}
    if issubclass(self.block_cls, blocks.BottleneckBlock):
      block_kwargs = dict(
        stride_in=self.stride_in,
        cardinality=self.cardinality,
        base_width=self.base_width,
      )
    # nn.remat keeps the blocks' names, so checkpoints do not care.
    block_cls = nn.remat(self.block_cls) if self.remat else self.block_cls
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = block_cls(
          features=self.stage_widths[i],
          strides=2 if i > 0 and j == 0 else 1,
          conv=conv,
          norm=norm,
          shortcut=self.shortcut,
          zero_init_last_bn=self.zero_init_last_bn,
          name=f'stage{i + 1}_block{j}',
          **block_kwargs,
        )(x)
    if preact:
      x = nn.relu(norm(name='bn_final')(x))
    # Pooling, logits and (later) the loss in float32 whatever the dtype.
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='head')(x)


_CIFAR = dict(
  block_cls=blocks.BasicBlock,
  stage_widths=CIFAR_WIDTHS,
  stem='cifar',
  stem_width=16,
  num_classes=10,
)
_BASIC = dict(
  block_cls=blocks.BasicBlock,
  stage_widths=IMAGENET_BASIC_WIDTHS,
  stem='imagenet',
  stem_width=64,
  num_classes=1000,
)
_BOTTLENECK = dict(
  block_cls=blocks.BottleneckBlock,
  stage_widths=IMAGENET_BOTTLENECK_WIDTHS,
  stem='imagenet',
  stem_width=64,
  num_classes=1000,
)


def _choice(name, value, choices):
  if value not in choices:
    raise ConfigError(
      f'model.{name}={value!r} is not one of {", ".join(map(str, choices))}'
    )


def cifar_blocks_per_stage(depth: int) -> int:
  """n of the paper's 6n+2 layers; rejects other depths."""
  if depth < 8 or (depth - 2) % 6:
    raise ConfigError(
      f'CIFAR depth {depth} is not 6n+2 with n >= 1 '
      '(e.g. 20, 32, 44, 56, 110, 1202)'
    )
  return (depth - 2) // 6


def cifar_net(depth: int, residual: bool = True):
  """Section 4.2's network of `depth` = 6n+2 layers: three stages of n
  basic blocks (16, 32, 64 filters); option A shortcuts, or none (plain)."""
  n = cifar_blocks_per_stage(depth)
  shortcut = 'A' if residual else None
  return partial(ResNet, stage_sizes=(n,) * 3, shortcut=shortcut, **_CIFAR)


def imagenet_net(depth: int, residual: bool = True):
  """Table 1's network of `depth` layers: basic blocks with option A (18,
  34: Table 2) or bottlenecks with option B (50, 101, 152: Table 3); no
  shortcuts (plain)."""
  if depth not in IMAGENET_STAGES:
    raise ConfigError(
      f'ImageNet depth {depth} is not one of '
      f'{", ".join(map(str, IMAGENET_STAGES))}'
    )
  bottleneck, stages = IMAGENET_STAGES[depth]
  shortcut = ('B' if bottleneck else 'A') if residual else None
  kind = _BOTTLENECK if bottleneck else _BASIC
  return partial(ResNet, stage_sizes=stages, shortcut=shortcut, **kind)


# The paper's networks. CIFAR-10, section 4.2 (Table 6, Figure 6).
ResNet20, ResNet32, ResNet44, ResNet56, ResNet110, ResNet1202 = (
  cifar_net(d) for d in (20, 32, 44, 56, 110, 1202)
)
Plain20, Plain32, Plain44, Plain56, Plain110 = (
  cifar_net(d, residual=False) for d in (20, 32, 44, 56, 110)
)
# ImageNet, Table 1 (Tables 2-4).
ResNet18, ResNet34, ResNet50, ResNet101, ResNet152 = (
  imagenet_net(d) for d in (18, 34, 50, 101, 152)
)
Plain18, Plain34 = (imagenet_net(d, residual=False) for d in (18, 34))
# Xie et al. 2017: 32 groups of width 4 in the first stage's 3x3.
ResNeXt50_32x4d = partial(ResNet50, cardinality=32, base_width=4)


def build(model_cfg, num_classes: int) -> ResNet:
  """The network a config's `model` section describes; every invalid value
  raises ConfigError naming the valid choices, before anything compiles."""
  m = model_cfg
  _choice('family', m.family, ('cifar', 'imagenet'))
  _choice('block', m.block, options.BLOCK_STYLES)
  _choice('stride', m.stride, options.STRIDES)
  _choice('stem', m.stem, options.STEMS)
  _choice('init', m.init, INIT_MODES)
  _choice('dtype', m.dtype, options.DTYPES)
  if m.residual:
    _choice('shortcut', m.shortcut, options.SHORTCUTS)
  elif m.shortcut is not None:
    raise ConfigError(
      f'model.shortcut={m.shortcut!r} on a plain net: plain '
      'nets have no shortcut (leave it None)'
    )
  preact = m.block == 'preact'
  if m.zero_init_residual and not m.residual:
    raise ConfigError(
      'model.zero_init_residual=True on a plain net: with no shortcut to '
      'carry the signal, zeroing the last BN of each block zeroes the '
      "network's output (it is a residual nets' trick)"
    )
  if m.stem == 'deep' and m.family == 'cifar':
    raise ConfigError(
      "model.stem='deep' is an ImageNet stem; CIFAR nets have one 3x3 conv"
    )
  net = cifar_net if m.family == 'cifar' else imagenet_net
  network = net(m.depth, m.residual)  # the paper's, then the options
  bottleneck = network.keywords['block_cls'] is blocks.BottleneckBlock
  kwargs = {}
  if not bottleneck and (m.cardinality != 1 or m.stride != 'v1'):
    raise ConfigError(
      'model.cardinality and model.stride apply to '
      'bottleneck nets (depth 50, 101, 152) only'
    )
  if bottleneck:
    block_cls = (
      blocks.PreActBottleneckBlock if preact else blocks.BottleneckBlock
    )
    kwargs.update(
      stride_in=m.stride, cardinality=m.cardinality, base_width=m.base_width
    )
  else:
    block_cls = blocks.PreActBasicBlock if preact else blocks.BasicBlock
  kwargs.update(
    block_cls=block_cls,
    num_classes=num_classes,
    shortcut=m.shortcut if m.residual else None,
    zero_init_last_bn=m.zero_init_residual,
    init_mode=m.init,
    bn_momentum=m.bn_momentum,
    bn_epsilon=m.bn_epsilon,
    dtype=DTYPES[m.dtype],
    remat=m.remat,
    bn_frozen=m.bn_frozen,
    deep_stem=m.stem == 'deep',
    input_scale=tuple(float(v) for v in m.input_scale),
  )
  return network(**kwargs)


def block_responses(model: ResNet, variables, images, train: bool = False):
  """Each block's branch responses, in network order (for Figure 7).

  Returns [(block name, (response, ...)), ...]: per block, the output of
  each BN of its branch before ReLU or the addition (v1 blocks); the last
  one is the residual-branch output. Plain nets report the same points.
  """
  mutable = ['intermediates', 'batch_stats'] if train else ['intermediates']
  _, state = model.apply(variables, images, train=train, mutable=mutable)
  found = state['intermediates']

  def order(name):  # 'stage2_block10' -> (2, 10), not string order
    stage, block = name.removeprefix('stage').split('_block')
    return int(stage), int(block)

  return [(name, found[name]['responses']) for name in sorted(found, key=order)]
