"""The TrainState: the moving average of the weights (train.ema_decay)."""

import jax
import numpy as np
import pytest

from resnet_jax.train import loop
from resnet_jax.train import train_state
from tests.helpers import tiny_config


def test_ema_follows_its_formula_through_training_steps():
  config = tiny_config(length=3)
  config.train.update(ema_decay=0.5, ema_warmup=True)
  exp = loop.setup(config)
  state = loop.initial_state(exp)
  assert isinstance(state, train_state.EmaTrainState)
  weights = lambda s: jax.device_get(  # noqa: E731
    {'params': s.params, 'batch_stats': s.batch_stats}
  )
  expected = weights(state)  # the average starts at the initial weights
  step = loop.train_fn(exp, 0)
  for n in range(3):
    state, _ = step(state)
    # TensorFlow's num_updates warm-up: min(0.5, (1 + n) / (10 + n)).
    decay = min(0.5, (1 + n) / (10 + n))
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


def test_weights_are_selected_by_name():
  state = train_state.TrainState(0, {'w': 1.0}, {}, (), 0.0)
  assert train_state.with_weights(state, 'raw') is state
  with pytest.raises(Exception, match='keeps no moving average'):
    train_state.with_weights(state, 'ema')
  averaged = train_state.restart_ema(state).replace(
    ema={'params': {'w': 2.0}, 'batch_stats': {}}
  )
  assert train_state.with_weights(averaged, 'ema').params == {'w': 2.0}
  with pytest.raises(Exception, match='not one of raw, ema'):
    train_state.with_weights(averaged, 'best')
