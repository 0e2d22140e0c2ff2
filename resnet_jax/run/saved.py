"""What a training run's directory holds, read back: its config.json and
its newest checkpoint. Evaluation, export, prediction, the response
statistics and fine-tuning all start here."""

import json
import os

import jax
import jax.numpy as jnp
from ml_collections import config_dict

from resnet_jax import parallel
from resnet_jax.data import cifar
from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from resnet_jax.run import checkpoint
from resnet_jax.run import layout
from resnet_jax.run import resume
from resnet_jax.train import optim
from resnet_jax.train import train_state


def saved_config(workdir: str) -> config_dict.ConfigDict:
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
  for key, value in resume.added_keys(resume.flatten(raw)).items():
    section, leaf = key.split('.')
    config[section][leaf] = value  # a run saved before the key existed
  return config


def image_shapes(config):
  """(input image shape, pixel_mean shape) of a config's runs: CIFAR's
  mean is always per pixel, the others' per pixel or per channel."""
  size = config.data.image_size
  shape = (size, size, 3)
  if cifar.is_cifar(config.data.name):
    return shape, shape
  return shape, (1, 1, 3) if config.data.mean == 'channel' else shape


def abstract_state(
  model, tx, image_shape, mesh, mean_shape=None, ema: bool = False
) -> train_state.TrainState:
  """Shapes, dtypes and (replicated) shardings of a TrainState (with the
  weights' moving average if `ema`), for restoring a checkpoint without
  computing anything."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def init():
    mean = jnp.zeros(mean_shape or image_shape, jnp.float32)
    return train_state.create(model, tx, image_shape, mean, ema=ema)

  return jax.tree.map(
    lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
    jax.eval_shape(init),
  )


def restore(
  config, workdir, model, shape, mean_shape, mesh, weights: str = 'raw'
):
  """The newest readable checkpoint of `workdir`, or a ConfigError; its
  params and batch_stats the raw weights or (`weights='ema'`) their
  moving average."""
  train_state.check_weights(weights, keeps_ema(config))  # before reading
  params = jax.eval_shape(
    model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *shape), 'float32')
  )
  # The optimizer only shapes the checkpoint here: one step per epoch will do.
  tx, _ = optim.optimizer(config, params['params'], steps_per_epoch=1)
  directory = layout.path(workdir, layout.CHECKPOINTS)
  if not os.path.isdir(directory):
    raise ConfigError(f'no checkpoint in {directory}')
  # Read-only: a run may be training in this workdir meanwhile.
  mgr = checkpoint.manager(workdir, config.train.keep_checkpoints, True)
  abstract = abstract_state(
    model, tx, shape, mesh, mean_shape, ema=keeps_ema(config)
  )
  state = resume.restore_newest_readable(
    mgr, abstract, directory, move_damaged=False
  )
  if state is None:
    raise ConfigError(f'no checkpoint in {directory}')
  return train_state.with_weights(state, weights)


def keeps_ema(config) -> bool:
  """Whether a run's checkpoints hold a moving average of its weights."""
  return config.train.ema_decay is not None


def load(workdir: str, config=None, mesh=None, weights: str = 'raw'):
  """(config, model, state) of a run with ImageNet-style or CIFAR
  inputs, the state on the host: config.json (or `config`), the model it
  builds and the newest checkpoint, with its raw or 'ema' weights."""
  config = config or saved_config(workdir)
  model = resnet.build(config.model, config.data.num_classes)
  shape, mean_shape = image_shapes(config)
  mesh = mesh or parallel.make_mesh()
  state = restore(config, workdir, model, shape, mean_shape, mesh, weights)
  return config, model, jax.device_get(state)
