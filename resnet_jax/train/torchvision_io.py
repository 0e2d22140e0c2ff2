"""A workdir from a torchvision ResNet/ResNeXt state dict, and a workdir's
checkpoint back to one (the tensor mapping: model/torch_convert.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from resnet_jax.model import torch_convert
from resnet_jax.run import checkpoint
from resnet_jax.run import files
from resnet_jax.run import layout
from resnet_jax.run import saved_config
from resnet_jax.train import optim
from resnet_jax.train import saved_state
from resnet_jax.train import train_state


def import_checkpoint(config, torch_path: str, workdir: str) -> dict:
  """FILE -> WORKDIR/config.json and checkpoints/0; returns a summary."""
  torch_convert.check_config(config.model)
  checkpoints = layout.path(workdir, layout.CHECKPOINTS)
  if os.path.isdir(checkpoints) and os.listdir(checkpoints):
    raise ConfigError(
      f'{checkpoints} already holds checkpoints: convert into a new --workdir'
    )
  state_dict = torch_convert.read(torch_path)  # before any model is built
  model = resnet.build(config.model, config.data.num_classes)
  size = config.data.image_size
  template = jax.eval_shape(
    model.init, jax.random.key(0), jnp.zeros((1, size, size, 3))
  )
  variables = torch_convert.import_state_dict(state_dict, template)
  mean, config.model.input_scale = torch_convert.input_normalisation()
  config.data.mean = 'channel'
  tx, _ = optim.optimizer(config, variables['params'], steps_per_epoch=1)
  variables = jax.tree.map(jnp.asarray, variables)
  state = train_state.create(model, tx, None, mean, variables=dict(variables))
  params = state.params
  os.makedirs(workdir, exist_ok=True)
  saver = checkpoint.Saver(
    checkpoint.manager(workdir, config.train.keep_checkpoints)
  )
  saver.save(0, state)
  saver.wait()
  files.replace(
    layout.path(workdir, layout.CONFIG),
    config.to_json_best_effort(indent=2, sort_keys=True) + '\n',
  )
  return dict(
    workdir=workdir,
    tensors=len(state_dict),
    params=sum(int(np.size(p)) for p in jax.tree.leaves(params)),
  )


def export_checkpoint(workdir: str, path: str, weights: str = 'raw') -> dict:
  """WORKDIR's latest checkpoint -> FILE in torchvision's layout: its raw
  weights or (`weights='ema'`) their moving average."""
  config = saved_config.read(workdir)
  torch_convert.check_config(config.model)  # before reading the checkpoint
  _, _, state = saved_state.load(workdir, config, weights=weights)
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  state_dict, normalise = torch_convert.export_state_dict(
    variables, state.pixel_mean, config.model.input_scale
  )
  torch_convert.write(path, state_dict)
  return dict(
    file=path, step=int(state.step), weights=weights, normalize=normalise
  )
