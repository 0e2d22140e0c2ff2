"""A training run's newest checkpoint read back as a TrainState (its
config: run/saved_config.py). Evaluation, export, prediction, the response
statistics, fine-tuning and distillation all start here. In train/, not
run/: the optimizer the run trained with shapes the checkpoint."""

import os

import jax
import jax.numpy as jnp

from resnet_jax import parallel
from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from resnet_jax.run import checkpoint
from resnet_jax.run import layout
from resnet_jax.run import resume
from resnet_jax.run import saved_config
from resnet_jax.train import optim
from resnet_jax.train import train_state


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
  # Before reading anything:
  train_state.check_weights(weights, saved_config.keeps_ema(config))
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
    model, tx, shape, mesh, mean_shape, ema=saved_config.keeps_ema(config)
  )
  state = resume.restore_newest_readable(
    mgr, abstract, directory, move_damaged=False
  )
  if state is None:
    raise ConfigError(f'no checkpoint in {directory}')
  return train_state.with_weights(state, weights)


def load(workdir: str, config=None, mesh=None, weights: str = 'raw'):
  """(config, model, state) of a run with ImageNet-style or CIFAR
  inputs, the state on the host: config.json (or `config`), the model it
  builds and the newest checkpoint, with its raw or 'ema' weights."""
  config = config or saved_config.read(workdir)
  model = resnet.build(config.model, config.data.num_classes)
  shape, mean_shape = saved_config.image_shapes(config)
  mesh = mesh or parallel.make_mesh()
  state = restore(config, workdir, model, shape, mean_shape, mesh, weights)
  return config, model, jax.device_get(state)
