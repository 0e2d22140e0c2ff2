"""ResNets in plain PyTorch with torchvision's module names and v1.5
strides (torchvision itself has no CPU wheel here): the other side of the
import tests. Written from torchvision's documented architecture: conv1
7x7/2, bn1, max pool 3x3/2, layer1-4, average pool, fc; a bottleneck
strides in its 3x3 conv; downsample = (1x1 conv, BN) where the shape
changes."""

import torch
from torch import nn


class Basic(nn.Module):
  expansion = 1

  def __init__(self, cin, width, stride, groups=1, base_width=64):
    super().__init__()
    del groups, base_width
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.downsample = _downsample(cin, width, stride)

  def forward(self, x):
    y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
    return torch.relu(y + (self.downsample(x) if self.downsample else x))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, planes, stride, groups=1, base_width=64):
    super().__init__()
    width = planes * base_width // 64 * groups
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(
      width, width, 3, stride, 1, groups=groups, bias=False
    )
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.downsample = _downsample(cin, planes * 4, stride)

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(y)))))
    return torch.relu(y + (self.downsample(x) if self.downsample else x))


def _downsample(cin, cout, stride):
  if stride == 1 and cin == cout:
    return None
  return nn.Sequential(
    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
  )


class ResNet(nn.Module):
  def __init__(self, block, layers, num_classes, groups=1, width_per_group=64):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin, stages = 64, []
    for i, count in enumerate(layers):
      planes = 64 * 2**i
      blocks = []
      for j in range(count):
        stride = 2 if i > 0 and j == 0 else 1
        blocks.append(block(cin, planes, stride, groups, width_per_group))
        cin = planes * block.expansion
      stages.append(nn.Sequential(*blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      x = layer(x)
    return self.fc(x.mean((2, 3)))


def build(name: str, num_classes: int) -> ResNet:
  """'resnet18', 'resnet50' or 'resnext50_32x4d', every BN's statistics
  and affine parameters random (so that they matter), in eval mode."""
  net = {
    'resnet18': lambda: ResNet(Basic, (2, 2, 2, 2), num_classes),
    'resnet50': lambda: ResNet(Bottleneck, (3, 4, 6, 3), num_classes),
    'resnext50_32x4d': lambda: ResNet(
      Bottleneck, (3, 4, 6, 3), num_classes, groups=32, width_per_group=4
    ),
  }[name]()
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        n = module.num_features
        module.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
        module.bias.copy_(0.1 * torch.randn(n, generator=generator))
        module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
        module.running_var.copy_(1 + torch.rand(n, generator=generator))
  return net.eval()
