"""Parsing of config-file arguments such as 'resnet110,shortcut=B'.

The argument after the colon of `--config=configs/cifar10.py:ARG` names the
network and the ablation axes; the config files turn it into their keys.
"""

import importlib.util
import os
import re

from ml_collections import config_dict

from resnet_jax.errors import ConfigError
from resnet_jax.model import options

# Option name -> valid values: the model's own tables (without JAX: a
# command parses its config before it imports JAX).
OPTIONS = {
  'shortcut': options.SHORTCUTS,
  'block': options.BLOCK_STYLES,
  'stride': options.STRIDES,
  'dtype': options.DTYPES,
  'stem': options.STEMS,
}
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(PACKAGE)  # a source checkout (not an installed copy)

_NAME = re.compile(r'^(resnet|plain|resnext)(\d+)(?:_(\d+)x(\d+)d)?$')


def parse(arg: str) -> tuple[dict, dict]:
  """'resnext50_32x4d,stride=v1.5' -> (name parts, options).

  Name parts: kind ('resnet', 'plain' or 'resnext'), depth, and for ResNeXt
  cardinality and base_width.
  """
  name, *pairs = [p.strip() for p in arg.split(',')]
  match = _NAME.match(name.lower())
  if not match:
    raise ConfigError(
      f'unknown model {name!r}: expected resnetN, plainN or '
      'resnextN_GxWd (e.g. resnet20, plain56, resnext50_32x4d)'
    )
  kind, depth, groups, width = match.groups()
  if kind == 'resnext' and groups is None:
    raise ConfigError(
      f'{name!r}: ResNeXt needs cardinality and width, e.g. resnext50_32x4d'
    )
  if kind != 'resnext' and groups is not None:
    raise ConfigError(f'{name!r}: only resnext names take a _GxWd suffix')
  parts = dict(
    kind=kind,
    depth=int(depth),
    cardinality=int(groups or 1),
    base_width=int(width or 64) if kind == 'resnext' else 64,
  )
  options = {}
  for pair in pairs:
    key, sep, value = pair.partition('=')
    if not sep or key not in OPTIONS:
      raise ConfigError(
        f'config option {pair!r} is not KEY=VALUE with KEY '
        f'one of {", ".join(OPTIONS)}'
      )
    if value not in OPTIONS[key]:
      raise ConfigError(
        f'{key}={value!r} is not one of {", ".join(OPTIONS[key])}'
      )
    options[key] = value
  if kind == 'plain' and 'shortcut' in options:
    raise ConfigError(
      f'{name}: plain nets have no shortcut, so '
      f'shortcut={options["shortcut"]} does not apply'
    )
  return parts, options


def model_config(arg: str, family: str) -> config_dict.ConfigDict:
  """The `model` section every config file shares, from the config argument.

  Defaults are the paper's: option A on the CIFAR nets and ResNet-18/34
  (Table 2), option B on the bottleneck nets (Tables 3-4).
  """
  parts, options = parse(arg)
  residual = parts['kind'] != 'plain'
  bottleneck = family == 'imagenet' and parts['depth'] >= 50
  m = config_dict.ConfigDict()
  m.family = family  # 'cifar' (section 4.2) or 'imagenet' (Table 1)
  m.depth = parts['depth']  # CIFAR: 6n+2; ImageNet: 18, 34, 50, 101, 152
  m.residual = residual  # False: the paper's plain nets, no shortcuts at all
  # 'A' zero-pad, 'B' project on shape change, 'C' always project, 'D'
  # ResNet-D (avg-pool, project); None on plain nets.
  m.shortcut = (
    options.get('shortcut', 'B' if bottleneck else 'A')
    if residual
    else config_dict.placeholder(str)
  )
  m.block = options.get('block', 'standard')  # or 'preact' (He et al. 2016)
  m.stride = options.get('stride', 'v1')  # bottleneck stride: 'v1' / 'v1.5'
  # ImageNet stem: 'standard' (7x7, the paper) or 'deep' (ResNet-C's three
  # 3x3 convs); ResNet-50-D is resnet50,stride=v1.5,stem=deep,shortcut=D.
  m.stem = options.get('stem', 'standard')
  m.cardinality = parts['cardinality']  # ResNeXt groups in the 3x3 conv
  m.base_width = parts['base_width']  # ResNeXt width per group
  m.init = 'fan_in'  # He-normal fan: 'fan_in' (Caffe's MSRA) or 'fan_out'
  m.zero_init_residual = False  # zero the last BN scale of each branch
  m.bn_momentum = 0.9  # Flax convention: PyTorch's momentum=0.1
  m.bn_epsilon = 1e-5
  m.dtype = options.get('dtype', 'float32')  # compute dtype: or 'bfloat16'
  # Per-channel divisor of the mean-subtracted pixels. 1: the paper (mean
  # subtraction only); torchvision weights (resnet_jax.convert): 255 x
  # ImageNet's std, so that they are used exactly as trained.
  m.input_scale = (1.0, 1.0, 1.0)
  # Recompute each block's activations in the backward pass instead of
  # keeping them: less memory (larger batches, deeper nets), more compute.
  m.remat = False
  # Frozen BN: normalise with the running statistics in training too and
  # keep them (torchvision's FrozenBatchNorm2d); linear probes set it.
  m.bn_frozen = False
  return m


def shipped_folder(name: str) -> str:
  """resnet_jax/NAME in an installed copy (where the wheel puts the
  repository's configs/ and data/ samples), else the checkout's folder."""
  installed = os.path.join(PACKAGE, name)
  if os.path.isdir(installed):
    return installed
  return os.path.join(REPO, {'samples': 'data'}.get(name, name))


def sample_dir(name: str) -> str:
  """A bundled data sample ('cifar10-sample', 'imagenet-sample')."""
  return os.path.join(shipped_folder('samples'), name)


def config_file(path: str) -> str:
  """A config file: `path` as given if it exists, else the built-in config
  it names (quickstart, cifar10, cifar100, imagenet, finetune; also as
  'cifar10.py' or 'configs/cifar10.py', from any folder)."""
  if os.path.isfile(path):
    return path
  folder, base = os.path.split(path)
  shipped = os.path.join(
    shipped_folder('configs'), base.removesuffix('.py') + '.py'
  )
  if folder in ('', 'configs') and os.path.isfile(shipped):
    return shipped
  return path


def built_in_configs() -> list[str]:
  return sorted(
    f.removesuffix('.py')
    for f in os.listdir(shipped_folder('configs'))
    if f.endswith('.py') and not f.startswith('_')
  )


def load(path_and_arg: str) -> config_dict.ConfigDict:
  """'configs/FILE.py:ARG' or 'NAME:ARG' -> the ConfigDict that --config=
  would load (config_file finds it)."""
  path, _, arg = path_and_arg.partition(':')
  file = config_file(path)
  if not os.path.isfile(file):
    raise ConfigError(
      f'no config file {path!r}: give a path, or one of '
      + ', '.join(built_in_configs())
    )
  spec = importlib.util.spec_from_file_location('config_file', file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
