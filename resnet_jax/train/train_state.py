"""What a run trains and saves: the TrainState, and its one constructor."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from resnet_jax.errors import ConfigError


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  # The training images' per-pixel mean, saved with the run so that
  # evaluation on other data needs no training data.
  pixel_mean: jax.Array
  ema = None  # no moving average of the weights: see EmaTrainState


class EmaTrainState(TrainState):
  """A TrainState with the exponential moving average of the weights,
  {'params', 'batch_stats'}, for runs that set train.ema_decay. (A class
  of its own, so that the checkpoints of other runs keep the layout they
  always had.)"""

  ema: Any


def create(
  model,
  tx,
  image_shape,
  pixel_mean,
  seed: int = 0,
  variables=None,
  ema: bool = False,
) -> TrainState:
  """Step 0: the model's initial variables from `seed` (or `variables`,
  imported weights), the optimizer's empty state, the training mean and,
  with `ema`, the average started at the initial weights. Pure: jit it to
  build a state, or jax.eval_shape it for the shapes a checkpoint
  restores into."""
  if variables is None:
    x = jnp.zeros((1, *image_shape), jnp.float32)
    variables = model.init(jax.random.key(seed), x)
  state = TrainState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=tx.init(variables['params']),
    pixel_mean=jnp.asarray(pixel_mean, jnp.float32),
  )
  return restart_ema(state) if ema else state


def restart_ema(state: TrainState) -> EmaTrainState:
  """The average started afresh at the state's weights (copies: the
  step donates both)."""
  weights = {'params': state.params, 'batch_stats': state.batch_stats}
  fields = {f: getattr(state, f) for f in TrainState.__dataclass_fields__}
  return EmaTrainState(**fields, ema=jax.tree.map(jnp.array, weights))


def update_ema(ema, params, batch_stats, decay):
  """decay * average + (1 - decay) * the new weights, for every leaf."""
  new = {'params': params, 'batch_stats': batch_stats}
  return optax.incremental_update(new, ema, step_size=1.0 - decay)


def ema_decay_at(step, decay: float, warmup: bool):
  """The decay of the update after `step` steps: `decay`, or with
  `warmup` min(decay, (1 + step) / (10 + step)) (TensorFlow's
  ExponentialMovingAverage with num_updates), so that the average
  forgets the initial weights early in a short run."""
  if not warmup:
    return decay
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


WEIGHTS = ('raw', 'ema')


def check_weights(which: str, has_ema: bool) -> None:
  """ConfigError unless `which` names weights a run has."""
  if which not in WEIGHTS:
    raise ConfigError(f'--weights={which!r} is not one of {", ".join(WEIGHTS)}')
  if which == 'ema' and not has_ema:
    raise ConfigError(
      'this run keeps no moving average of its weights (train.ema_decay '
      'was not set): use --weights=raw'
    )


def with_weights(state: TrainState, which: str) -> TrainState:
  """The state with its 'raw' weights (as trained) or its 'ema' ones in
  params and batch_stats: what evaluation, prediction and export use."""
  check_weights(which, state.ema is not None)
  if which == 'raw':
    return state
  return state.replace(
    params=state.ema['params'], batch_stats=state.ema['batch_stats']
  )
