"""Figure 7: the standard deviation of each 3x3 layer's responses (after
BN, before ReLU or the addition), over evaluation images."""

import json
import os

import jax
import numpy as np

from resnet_jax.config import data_names
from resnet_jax.data import augment
from resnet_jax.data import cifar
from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from resnet_jax.run import files
from resnet_jax.run import layout
from resnet_jax.run import saved_config
from resnet_jax.train import saved_state

FILE = layout.RESPONSES


def layer_stds(model, variables, images, batch_size: int = 100) -> np.ndarray:
  """std of each layer's response (see the module's docstring) over
  `images` (already normalised), in network order."""
  apply = jax.jit(
    lambda v, x: [
      r for _, block in resnet.block_responses(model, v, x) for r in block
    ]
  )
  totals = None  # per layer: [count, per-channel sum, sum of squares]
  for start in range(0, len(images), batch_size):
    layers = jax.device_get(
      apply(variables, images[start : start + batch_size])
    )
    batch = [
      [
        np.prod(r.shape[:3]),
        np.asarray(r, np.float64).sum((0, 1, 2)),
        np.square(np.asarray(r, np.float64)).sum((0, 1, 2)),
      ]
      for r in layers
    ]
    totals = (
      batch
      if totals is None
      else [[a + b for a, b in zip(t, u)] for t, u in zip(totals, batch)]
    )
  stds = []
  for count, total, squares in totals:
    mean = total / count
    variance = np.maximum(squares / count - np.square(mean), 0.0)
    stds.append(float(np.sqrt(variance).mean()))
  return np.array(stds)


def workdir_responses(workdir: str, max_images: int = 500) -> dict:
  """The layer stds of a CIFAR run's latest checkpoint; also written to
  WORKDIR/responses.json."""
  config = saved_config.read(workdir)
  if not data_names.is_cifar(config.data.name):
    raise ConfigError(
      f'{workdir}: responses are computed for CIFAR runs (Figure 7), not '
      f'{config.data.name}'
    )
  if max_images <= 0:
    raise ConfigError(f'--images={max_images} must be positive')
  split, split_name = cifar.load_eval(config.data)
  _, model, state = saved_state.load(workdir, config)
  images = np.asarray(
    augment.normalise(split.images[:max_images], state.pixel_mean)
  )
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  result = dict(
    step=int(state.step),
    split=split_name,
    images=len(images),
    residual=bool(config.model.residual),
    depth=int(config.model.depth),
    std=[round(v, 6) for v in layer_stds(model, variables, images)],
  )
  files.replace(os.path.join(workdir, FILE), json.dumps(result))
  return result
