"""What a run trains and saves: the TrainState, and its one constructor."""

from typing import Any

import flax
import jax
import jax.numpy as jnp


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  # The training images' per-pixel mean, saved with the run so that
  # evaluation on other data needs no training data.
  pixel_mean: jax.Array


def create(
  model, tx, image_shape, pixel_mean, seed: int = 0, variables=None
) -> TrainState:
  """Step 0: the model's initial variables from `seed` (or `variables`,
  imported weights), the optimizer's empty state and the training mean.
  Pure: jit it to build a state, or jax.eval_shape it for the shapes a
  checkpoint restores into."""
  if variables is None:
    x = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init(jax.random.key(seed), x)
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=tx.init(variables['params']),
    pixel_mean=jnp.asarray(pixel_mean, jnp.float32),
  )
