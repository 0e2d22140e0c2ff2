"""A training run's config.json read back (with the keys added since it
was saved), and the shapes and weights it implies. Its checkpoint, read
back as a TrainState: train/saved_state.py."""

import json
import os

from ml_collections import config_dict

from resnet_jax.config import data_names
from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.run import layout


def read(workdir: str) -> config_dict.ConfigDict:
  """DIR/config.json as a ConfigDict. Keys saved as null are the config
  files' optional strings (paths, shortcut), so they stay overridable."""
  path = layout.path(workdir, layout.CONFIG)
  if not os.path.isfile(path):
    raise ConfigError(
      f"{path} not found: --workdir must be a training run's directory"
    )
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise ConfigError(f'{path} is not valid JSON ({e})') from e

  def convert(tree):
    return config_dict.ConfigDict(
      {
        k: convert(v)
        if isinstance(v, dict)
        else config_dict.placeholder(str)
        if v is None
        else tuple(v)
        if isinstance(v, list)
        else v
        for k, v in tree.items()
      }
    )

  config = convert(raw)
  for key, value in keys.older_values(keys.flatten(raw)).items():
    section, leaf = key.split('.')
    config[section][leaf] = value  # a run saved before the key existed
  return config


def image_shapes(config):
  """(input image shape, pixel_mean shape) of a config's runs: CIFAR's
  mean is always per pixel, the others' per pixel or per channel."""
  size = config.data.image_size
  shape = (size, size, 3)
  if data_names.is_cifar(config.data.name):
    return shape, shape
  return shape, (1, 1, 3) if config.data.mean == 'channel' else shape


def keeps_ema(config) -> bool:
  """Whether a run's checkpoints hold a moving average of its weights."""
  return config.train.ema_decay is not None
