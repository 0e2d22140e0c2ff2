"""The paper's ResNets in plain PyTorch, for the side-by-side benchmark.

The same architectures as resnet_jax.models (benchmarks/compare_torch.py
checks that the parameter counts agree): CIFAR 6n+2 nets with option-A
shortcuts (zero-padded identity, subsampled by stride 2), and ImageNet
bottleneck nets (v1: the stride in the first 1x1) with option-B
projections. BN momentum 0.1 in PyTorch's convention is Flax's 0.9.
"""

import torch
from torch import nn
import torch.nn.functional as F


def conv_bn(cin, cout, kernel, stride=1):
  return nn.Sequential(
    nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
    nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1),
  )


class BasicBlock(nn.Module):
  """Two 3x3 convs; option A: the shortcut subsamples and zero-pads."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.a = conv_bn(cin, cout, 3, stride)
    self.b = conv_bn(cout, cout, 3)
    self.stride, self.pad = stride, cout - cin

  def forward(self, x):
    shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
    if self.pad:
      shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.pad))
    return F.relu(self.b(F.relu(self.a(x))) + shortcut)


class Bottleneck(nn.Module):
  """1x1 (stride, v1), 3x3, 1x1 x4; option B: project on shape change."""

  def __init__(self, cin, width, stride):
    super().__init__()
    cout = 4 * width
    self.a = conv_bn(cin, width, 1, stride)
    self.b = conv_bn(width, width, 3)
    self.c = conv_bn(width, cout, 1)
    self.proj = (
      conv_bn(cin, cout, 1, stride) if stride > 1 or cin != cout else None
    )

  def forward(self, x):
    y = self.c(F.relu(self.b(F.relu(self.a(x)))))
    return F.relu(y + (self.proj(x) if self.proj is not None else x))


class CifarResNet(nn.Module):
  def __init__(self, depth, num_classes=10):
    super().__init__()
    n = (depth - 2) // 6
    self.stem = conv_bn(3, 16, 3)
    layers, cin = [], 16
    for stage, width in enumerate((16, 32, 64)):
      for i in range(n):
        layers.append(BasicBlock(cin, width, 2 if stage and not i else 1))
        cin = width
    self.blocks = nn.Sequential(*layers)
    self.head = nn.Linear(64, num_classes)

  def forward(self, x):
    x = self.blocks(F.relu(self.stem(x)))
    return self.head(x.mean((2, 3)))


IMAGENET_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class ImageNetResNet(nn.Module):
  def __init__(self, depth, num_classes=1000):
    super().__init__()
    self.stem = conv_bn(3, 64, 7, 2)
    layers, cin = [], 64
    for stage, count in enumerate(IMAGENET_STAGES[depth]):
      width = 64 * 2**stage
      for i in range(count):
        layers.append(Bottleneck(cin, width, 2 if stage and not i else 1))
        cin = 4 * width
    self.blocks = nn.Sequential(*layers)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.stem(x)), 3, 2, 1)
    return self.head(self.blocks(x).mean((2, 3)))


def build(family: str, depth: int, num_classes: int) -> nn.Module:
  if family == 'cifar':
    return CifarResNet(depth, num_classes)
  if depth not in IMAGENET_STAGES:
    raise ValueError(f'the reference has ImageNet depths {IMAGENET_STAGES}')
  return ImageNetResNet(depth, num_classes)


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


def train_images_per_sec(
  model,
  batch: int,
  size: int,
  steps: int,
  warmup: int,
  *,
  device,
  amp,
  compile_model,
):
  """SGD (momentum 0.9, weight decay 1e-4) steps on one resident batch,
  channels-last, with bf16 autocast if `amp`; images/s after warm-up."""
  import time

  model = model.to(device, memory_format=torch.channels_last)
  opt = torch.optim.SGD(
    model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4
  )
  x = torch.randn(batch, 3, size, size, device=device).to(
    memory_format=torch.channels_last
  )
  y = torch.randint(0, model.head.out_features, (batch,), device=device)
  forward = torch.compile(model) if compile_model else model

  def step():
    with torch.autocast(device.type, torch.bfloat16, enabled=amp):
      loss = F.cross_entropy(forward(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

  def sync():
    if device.type == 'cuda':
      torch.cuda.synchronize()

  for _ in range(warmup):
    step()
  sync()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return steps * batch / (time.perf_counter() - start)
