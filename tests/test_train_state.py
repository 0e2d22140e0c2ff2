"""The TrainState: the moving average of the weights (train.ema_decay)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.train import steps
from resnet_jax.train import train_state


class TinyNet(nn.Module):
  """A dense layer, BN and a head: parameters and BN statistics."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(4)(x.reshape(len(x), -1))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
    return nn.Dense(3, name='head')(nn.relu(x))


@pytest.mark.parametrize('warmup', [True, False])
def test_ema_follows_its_formula_through_training_steps(warmup):
  model, tx = TinyNet(), optax.sgd(0.5, momentum=0.9)
  images = jax.random.normal(jax.random.key(0), (8, 2, 2, 3))
  labels = jnp.arange(8) % 3
  state = train_state.create(model, tx, (2, 2, 3), jnp.zeros(3), ema=True)
  assert isinstance(state, train_state.EmaTrainState)
  step = jax.jit(
    functools.partial(
      steps.train_step,
      model=model,
      tx=tx,
      lr_fn=lambda s: 0.5,
      ema_decay=0.5,
      # Without ema_warmup, the plain decay from the first step.
      **({'ema_warmup': True} if warmup else {}),
    )
  )

  def weights(s):
    return jax.device_get({'params': s.params, 'batch_stats': s.batch_stats})

  expected = weights(state)  # the average starts at the initial weights
  for n in range(12):  # the warm-up reaches the decay at n = 8
    state, _ = step(state, images, labels)
    # TensorFlow's num_updates warm-up: min(0.5, (1 + n) / (10 + n)).
    decay = min(0.5, (1 + n) / (10 + n)) if warmup else 0.5
    expected = jax.tree.map(
      lambda e, w: decay * e + (1 - decay) * w, expected, weights(state)
    )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    jax.device_get(state.ema),
    expected,
  )
  assert not np.allclose(  # and it is not simply the weights
    expected['params']['head']['kernel'],
    weights(state)['params']['head']['kernel'],
  )
  # Without ema_decay the step keeps no average.
  plain = train_state.create(model, tx, (2, 2, 3), jnp.zeros(3))
  plain, _ = jax.jit(
    functools.partial(steps.train_step, model=model, tx=tx, lr_fn=lambda s: 0.5)
  )(plain, images, labels)
  assert plain.ema is None


def test_weights_are_selected_by_name():
  state = train_state.TrainState(0, {'w': 1.0}, {'m': 3.0}, (), 0.0)
  assert train_state.with_weights(state, 'raw') is state
  with pytest.raises(
    ConfigError,
    match=r'^this run keeps no moving average of its weights '
    r'\(train.ema_decay was not set\): use --weights=raw$',
  ):
    train_state.with_weights(state, 'ema')
  averaged = train_state.restart_ema(state).replace(
    ema={'params': {'w': 2.0}, 'batch_stats': {'m': 4.0}}
  )
  chosen = train_state.with_weights(averaged, 'ema')
  assert chosen.params == {'w': 2.0} and chosen.batch_stats == {'m': 4.0}
  with pytest.raises(Exception, match='not one of raw, ema'):
    train_state.with_weights(averaged, 'best')
