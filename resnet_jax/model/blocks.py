"""Residual blocks of He et al. 2015 (v1) and 2016 (pre-activation).

Blocks receive `conv` and `norm` as partials built once by the network, so
they never see dtypes, initialisers, BN momentum or axis names. Each block
sows the responses of its branch into the 'intermediates' collection under
'responses': for v1 blocks the output of each BN before ReLU or the addition,
the quantity the paper's Figure 7 plots; the last one sown is always the
residual-branch output (for pre-activation blocks, the last conv's output).
"""

from typing import Any
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


def projects(kind: str, strides: int, in_features: int, features: int) -> bool:
  """Whether a shortcut of this kind has a 1x1 projection here. Only where
  the shape changes is read from strides and widths, as the paper defines
  it; the kind itself is always explicit."""
  changes = strides != 1 or in_features != features
  return kind == 'C' or (kind in ('B', 'D') and changes)


class Shortcut(nn.Module):
  """The identity path of a residual block."""

  kind: str
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x):
    if not projects(self.kind, self.strides, x.shape[-1], self.features):
      if self.kind != 'A' or (
        self.strides == 1 and x.shape[-1] == self.features
      ):
        return x
      # Option A, parameter-free: subsample, then zero-pad the new channels
      # at the end (where the zeros go is a channel permutation the next
      # layer absorbs).
      x = x[:, :: self.strides, :: self.strides, :]
      pad = self.features - x.shape[-1]
      return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad)))
    strides = self.strides
    if self.kind == 'D' and strides != 1:
      # Averaging instead of skipping 3 of 4 positions (Bag of Tricks, 2019).
      x = nn.avg_pool(
        x,
        (strides, strides),
        (strides, strides),
        'SAME',
        count_include_pad=False,
      )
      strides = 1
    x = self.conv(self.features, (1, 1), strides, name='conv_proj')(x)
    return self.norm(name='bn_proj')(x)


class _Block(nn.Module):
  """Fields shared by every block. `shortcut=None` makes a plain block."""

  features: int  # the block's output width
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  shortcut: str | None
  zero_init_last_bn: bool = False
  act: Callable = nn.relu

  def _last_norm(self, name):
    # Zero-init of the last BN scale (Goyal et al. 2017) makes the block
    # start as the identity; the 2015 paper did not use it.
    if self.zero_init_last_bn:
      return self.norm(scale_init=nn.initializers.zeros, name=name)
    return self.norm(name=name)

  def _last_conv(self, *args, **kw):
    # Pre-activation branches end in a conv, not a BN: zero that instead.
    if self.zero_init_last_bn:
      kw['kernel_init'] = nn.initializers.zeros
    return self.conv(*args, **kw)

  def _preact_shortcut(self, x, pre):
    """Projections read the pre-activated input, as in the authors' code;
    the identity (and option A) read the raw input: a clean path."""
    if projects(self.shortcut, self.strides, x.shape[-1], self.features):
      return self._shortcut(pre)
    return self._shortcut(x)

  def _shortcut(self, x):
    return Shortcut(
      self.shortcut,
      self.features,
      self.strides,
      self.conv,
      self.norm,
      name='shortcut',
    )(x)

  def _respond(self, y):
    self.sow('intermediates', 'responses', y)
    return y


class BasicBlock(_Block):
  """Two 3x3 convs (paper Fig. 2 left); the stride is in the first."""

  @nn.compact
  def __call__(self, x):
    y = self._respond(
      self.norm(name='bn1')(
        self.conv(self.features, (3, 3), self.strides, name='conv1')(x)
      )
    )
    y = self.act(y)
    y = self._respond(
      self._last_norm('bn2')(self.conv(self.features, (3, 3), name='conv2')(y))
    )
    if self.shortcut is not None:
      y = y + self._shortcut(x)
    return self.act(y)


class BottleneckBlock(_Block):
  """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand x4 (paper Fig. 5).

  `stride_in='v1'` puts the stride in the first 1x1 (the paper, 3.86 GMACs
  for ResNet-50); 'v1.5' puts it in the 3x3 (torchvision, 4.09 GMACs).
  """

  stride_in: str = 'v1'
  cardinality: int = 1
  base_width: int = 64

  @nn.compact
  def __call__(self, x):
    planes = self.features // 4
    width = int(planes * self.base_width / 64) * self.cardinality
    s1, s3 = (self.strides, 1) if self.stride_in == 'v1' else (1, self.strides)
    y = self._respond(
      self.norm(name='bn1')(self.conv(width, (1, 1), s1, name='conv1')(x))
    )
    y = self.act(y)
    y = self._respond(
      self.norm(name='bn2')(
        self.conv(
          width, (3, 3), s3, feature_group_count=self.cardinality, name='conv2'
        )(y)
      )
    )
    y = self.act(y)
    y = self._respond(
      self._last_norm('bn3')(self.conv(self.features, (1, 1), name='conv3')(y))
    )
    if self.shortcut is not None:
      y = y + self._shortcut(x)
    return self.act(y)


class PreActBasicBlock(_Block):
  """BN-ReLU-conv twice, clean identity path (He et al. 2016, Fig. 4e)."""

  @nn.compact
  def __call__(self, x):
    pre = self.act(self.norm(name='bn1')(x))
    y = self.conv(self.features, (3, 3), self.strides, name='conv1')(pre)
    y = self.act(self._respond(self.norm(name='bn2')(y)))
    y = self._respond(self._last_conv(self.features, (3, 3), name='conv2')(y))
    if self.shortcut is None:
      return y
    return y + self._preact_shortcut(x, pre)


class PreActBottleneckBlock(BottleneckBlock):
  """Pre-activation bottleneck (He et al. 2016), with BottleneckBlock's
  stride placement and cardinality options."""

  @nn.compact
  def __call__(self, x):
    planes = self.features // 4
    width = int(planes * self.base_width / 64) * self.cardinality
    s1, s3 = (self.strides, 1) if self.stride_in == 'v1' else (1, self.strides)
    pre = self.act(self.norm(name='bn1')(x))
    y = self.conv(width, (1, 1), s1, name='conv1')(pre)
    y = self.act(self._respond(self.norm(name='bn2')(y)))
    y = self.conv(
      width, (3, 3), s3, feature_group_count=self.cardinality, name='conv2'
    )(y)
    y = self.act(self._respond(self.norm(name='bn3')(y)))
    y = self._respond(self._last_conv(self.features, (1, 1), name='conv3')(y))
    if self.shortcut is None:
      return y
    return y + self._preact_shortcut(x, pre)
