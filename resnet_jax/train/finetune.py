"""Transfer learning: a run that starts from another run's weights (one of
ours, or torchvision's imported by resnet_jax.convert) with a new head.

The backbone's weights and BN statistics, and the input normalisation it
was trained with (the training mean saved in its checkpoint, data.mean
and model.input_scale), come from finetune.init_from; the head is new,
sized data.num_classes. configs/finetune.py has the recipe and commands.
"""

import os

import jax
import numpy as np

from resnet_jax import parallel
from resnet_jax.config import arguments
from resnet_jax.errors import ConfigError
from resnet_jax.run import layout
from resnet_jax.run import saved_config
from resnet_jax.train import saved_state
from resnet_jax.train import train_state

# What must match for the source's weights to mean the same thing here.
ARCHITECTURE = (
  'family',
  'depth',
  'residual',
  'shortcut',
  'block',
  'stride',
  'stem',
  'cardinality',
  'base_width',
  'bn_epsilon',
)


def inherit(config) -> None:
  """Checks finetune.init_from against the config and copies the source's
  input normalisation into it. Raises ConfigError; reads only the
  source's config.json, so it runs before anything compiles."""
  ft = config.finetune  # (its mode is checked with the optimizer)
  if not ft.init_from:
    raise ConfigError(
      'finetune.init_from=DIR is required: the workdir of a training run '
      'or of resnet_jax.convert --torch_checkpoint'
    )
  if not config.data.num_classes:
    raise ConfigError(
      "data.num_classes is required: your data's number of classes, the "
      "new head's size"
    )
  source = saved_config.read(ft.init_from)
  checkpoints = layout.path(ft.init_from, layout.CHECKPOINTS)
  if not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
    raise ConfigError(f'finetune.init_from: no checkpoint in {checkpoints}')
  for key in ARCHITECTURE:
    if source.model[key] != config.model[key]:
      raise ConfigError(
        f'model.{key}={config.model[key]!r}, but {ft.init_from} holds a '
        f'network with {key}={source.model[key]!r}: use '
        f'--config=configs/finetune.py:{config_arg(source.model)}'
      )
  _, mean_shape = saved_config.image_shapes(source)
  size = config.data.image_size
  if mean_shape[:2] not in ((1, 1), (size, size)):
    raise ConfigError(
      f'{ft.init_from} subtracts a per-pixel mean of '
      f'{mean_shape[0]}x{mean_shape[1]} images: set data.image_size='
      f'{mean_shape[0]}'
    )
  config.model.input_scale = tuple(source.model.input_scale)
  config.data.mean = 'channel' if mean_shape[:2] == (1, 1) else 'pixel'
  # A linear probe uses the source's features as they were: its BN
  # normalises with, and keeps, the source's statistics.
  config.model.bn_frozen = config.finetune.mode == 'linear_probe'


def config_arg(m) -> str:
  """The argument of configs/finetune.py that names model config `m`'s
  network, e.g. 'resnet50,stride=v1.5' or 'resnet8,family=cifar'."""
  kind = (
    'plain' if not m.residual else 'resnext' if m.cardinality > 1 else 'resnet'
  )
  name = f'{kind}{m.depth}'
  if kind == 'resnext':
    name += f'_{m.cardinality}x{m.base_width}d'
  default = arguments.model_config(name, family=m.family)
  options = [
    f'{key}={m[key]}'
    for key in ('shortcut', 'block', 'stride', 'stem')
    if m[key] != default[key]
  ]
  if m.family != 'imagenet':
    options.append(f'family={m.family}')
  return ','.join([name, *options])


def source_state(config) -> train_state.TrainState:
  """finetune.init_from's newest checkpoint, on the host (each process
  reads it whole; no device holds more than its replica)."""
  init_from = config.finetune.init_from
  local = parallel.make_mesh(jax.local_devices())
  _, _, state = saved_state.load(init_from, mesh=local)
  return state


def graft(fresh: train_state.TrainState, source: train_state.TrainState, mesh):
  """`fresh` (new head, step 0, empty momentum) with every other weight
  and the BN statistics of `source`, replicated on the mesh."""
  params = {k: v for k, v in source.params.items() if k != 'head'}
  _check_same_shapes(
    {k: v for k, v in fresh.params.items() if k != 'head'}, params, 'params'
  )
  _check_same_shapes(fresh.batch_stats, source.batch_stats, 'batch_stats')
  params['head'] = jax.device_get(fresh.params['head'])
  moved = parallel.replicate(mesh, (params, source.batch_stats))
  return fresh.replace(params=moved[0], batch_stats=moved[1])


def _check_same_shapes(ours, theirs, what: str):
  shapes = [jax.tree.map(np.shape, t) for t in (ours, theirs)]
  if shapes[0] != shapes[1]:
    raise ConfigError(
      f'finetune.init_from: its {what} do not fit this network; was it '
      'trained with another model config?'
    )
