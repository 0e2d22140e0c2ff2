"""The data-parallel step on 8 CPU devices."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import parallel
from resnet_jax.data import augment
from resnet_jax.errors import ConfigError
from resnet_jax.train import loop
from resnet_jax.train import losses
from resnet_jax.train import steps
from tests.helpers import REPO
from tests.helpers import tiny_config as shared_tiny_config

SAMPLE = str(REPO / 'data' / 'cifar10-sample')


def tiny_config(batch_size=16, bn_sync=False):
  return shared_tiny_config(batch_size=batch_size, bn_sync=bn_sync)


def run(config, devices, num_steps, per_call=1, history=None):
  """The state and metrics after num_steps; `history`, a list, gets the
  state before each call."""
  exp = loop.setup(config, devices)
  state = loop.initial_state(exp)
  data = parallel.replicate(
    exp.mesh, (exp.input.data.train.images, exp.input.data.train.labels)
  )
  fn = steps.sharded_train_step(
    exp.mesh,
    model=exp.model,
    tx=exp.tx,
    lr_fn=exp.lr_fn,
    seed=0,
    global_batch=config.train.batch_size,
    microbatches=config.train.microbatches,
    # The config's values (the loop's); test_per_device_bn_... steps with
    # train_step's defaults, which must equal them.
    label_smoothing=config.optim.label_smoothing,
    ema_decay=config.train.ema_decay,
    ema_warmup=config.train.ema_warmup,
    # One step per call is the default.
    **({} if per_call == 1 else {'num_steps': per_call}),
  )
  for _ in range(num_steps // per_call):
    if history is not None:  # copies: a view of a buffer stops its donation
      history.append(jax.tree.map(np.array, state))
    given = state
    state, metrics = fn(state, *data)
    # The state is donated: the new state takes its buffers (one copy of
    # the weights and optimizer state in memory, not two).
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(given))
  return jax.device_get(state), jax.device_get(metrics)


def assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


def test_eight_devices():
  assert jax.device_count() == 8  # set by tests/conftest.py


def test_one_step_gives_finite_metrics():
  state, metrics = run(tiny_config(), jax.devices(), 1)
  assert int(state.step) == 1
  assert set(metrics) == {'loss', 'error', 'lr', 'grad_norm_sq'}
  assert all(np.isfinite(v) for v in metrics.values())
  assert float(metrics['lr']) == pytest.approx(0.1)


def test_synchronised_bn_sharded_equals_single_device():
  config = tiny_config(bn_sync=True)
  sharded, m8 = run(config, jax.devices(), 3)
  single, m1 = run(config, jax.devices()[:1], 3)
  assert_trees_close(sharded.params, single.params, rtol=2e-4, atol=2e-6)
  assert_trees_close(
    sharded.batch_stats, single.batch_stats, rtol=2e-4, atol=2e-6
  )
  assert float(m8['loss']) == pytest.approx(float(m1['loss']), rel=1e-5)


def test_per_device_bn_equals_mean_of_independent_shards():
  config = tiny_config(bn_sync=False)
  sharded, metrics = run(config, jax.devices(), 1)
  # Each of the 8 shards on its own: one device, its 2 examples, its own BN
  # statistics. The first update is linear in the gradient, so averaging
  # the shards' new parameters equals averaging their gradients.
  exp = loop.setup(config, jax.devices()[:1])
  state0 = loop.initial_state(exp)
  images = jnp.asarray(exp.input.data.train.images)
  labels = jnp.asarray(exp.input.data.train.labels)
  key = jax.random.key(0)

  def compiled(**options):
    return jax.jit(
      functools.partial(
        steps.train_step, model=exp.model, tx=exp.tx, lr_fn=exp.lr_fn, **options
      )
    )

  step = compiled()
  # The model's own training-mode forward pass from a state: (logits,
  # {'batch_stats': the updated running averages}).
  forward = jax.jit(
    lambda state, x: exp.model.apply(
      {'params': state.params, 'batch_stats': state.batch_stats},
      x,
      train=True,
      mutable=['batch_stats'],
    )
  )
  # The gradient of one shard's mean loss, from the model's forward pass.
  gradient = jax.jit(
    jax.grad(
      lambda params, x, y: jnp.mean(
        losses.train_loss(forward(state0.replace(params=params), x)[0], y)
      )
    )
  )
  shards, wrong, grads = [], [], []
  for d in range(8):
    x, y = augment.train_batch(
      images,
      labels,
      state0.pixel_mean,
      key,
      0,
      16,
      jnp.arange(2 * d, 2 * d + 2),
    )
    shards.append(step(state0, x, y))
    wrong.append(np.argmax(forward(state0, x)[0], axis=-1) != y)
    grads.append(gradient(state0.params, x, y))
    if d == 0:
      first_x, first_y = x, y
  mean_params = jax.tree.map(
    lambda *p: np.mean(p, axis=0), *[s.params for s, _ in shards]
  )
  mean_stats = jax.tree.map(
    lambda *p: np.mean(p, axis=0), *[s.batch_stats for s, _ in shards]
  )
  assert_trees_close(sharded.params, mean_params, rtol=1e-4, atol=1e-6)
  assert_trees_close(sharded.batch_stats, mean_stats, rtol=1e-4, atol=1e-6)
  mean_loss = np.mean([float(m['loss']) for _, m in shards])
  assert float(metrics['loss']) == pytest.approx(mean_loss, rel=1e-5)
  # The error is the fraction of each shard's examples whose top class is
  # not the label.
  for (_, m), w in zip(shards, wrong):
    assert float(m['error']) == np.mean(w)
  assert float(metrics['error']) == pytest.approx(np.mean(wrong))

  # grad_norm_sq is the squared norm of the gradient that is applied: each
  # shard's own, and on 8 devices that of their mean.
  def norm_sq(tree):
    return sum(float(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(tree))

  for (_, m), g in zip(shards, grads):
    assert float(m['grad_norm_sq']) == pytest.approx(norm_sq(g), rel=1e-4)
  mean_grad = jax.tree.map(lambda *g: np.mean(g, axis=0), *grads)
  assert float(metrics['grad_norm_sq']) == pytest.approx(
    norm_sq(mean_grad), rel=1e-4
  )
  # One shard's new optimizer state and weights are the transform's
  # update from that gradient (a momentum that stays at zero would pass
  # every comparison of one step with another).
  updates, opt_state = exp.tx.update(grads[0], state0.opt_state, state0.params)
  assert_trees_close(shards[0][0].opt_state, opt_state, rtol=1e-4, atol=1e-6)
  assert_trees_close(
    shards[0][0].params,
    optax.apply_updates(state0.params, updates),
    rtol=1e-4,
    atol=1e-6,
  )
  # A second step's running averages start from the first step's, as the
  # model's own update from that state gives them (not from the initial
  # ones, which one step alone cannot tell apart); with label smoothing,
  # its loss is the smoothed loss of the model's logits.
  after_one = shards[0][0]
  smoothed = compiled(label_smoothing=0.1)
  after_two, second = smoothed(after_one, first_x, first_y)
  logits, expected = forward(after_one, first_x)
  assert_trees_close(
    after_two.batch_stats, expected['batch_stats'], rtol=1e-5, atol=1e-6
  )
  assert float(second['loss']) == pytest.approx(
    float(jnp.mean(losses.train_loss(logits, first_y, 0.1))), rel=1e-5
  )
  # And it differs from synchronised BN, which sees all 16 at once.
  synced, _ = run(tiny_config(bn_sync=True), jax.devices(), 1)
  diff = jax.tree.map(
    lambda a, b: np.abs(a - b).max(), synced.params, sharded.params
  )
  assert max(jax.tree.leaves(diff)) > 1e-5


def test_microbatches_equal_as_many_more_devices():
  """Gradient accumulation over 2 slices on 4 devices is the step of 8
  devices with per-device BN: same gradients, statistics and metrics.
  The accumulating run also keeps a moving average of its weights (its
  program is the only one of its kind anyway): each step's average is
  decay * average + (1 - decay) * (the new weights and BN statistics),
  decay = min(ema_decay, (1 + step) / (10 + step)), that is 1/10 after
  the first step (the warm-up's), 0.15 itself after the second (2/11 is
  more)."""
  config = tiny_config()
  config.train.microbatches = 2
  config.train.ema_decay = 0.15
  config.train.ema_warmup = True
  history = []
  accumulated, m_acc = run(config, jax.devices()[:4], 2, history=history)
  wider, m_wide = run(tiny_config(), jax.devices(), 2)
  for field in dataclasses.fields(wider):  # all but the average
    assert_trees_close(
      getattr(accumulated, field.name),
      getattr(wider, field.name),
      rtol=2e-5,
      atol=1e-6,
    )
  assert_trees_close(m_acc, m_wide, rtol=2e-5)
  # Not trivially: on 4 devices without slices the statistics differ.
  plain, _ = run(tiny_config(), jax.devices()[:4], 2)
  diff = jax.tree.map(
    lambda a, b: np.abs(a - b).max(), plain.batch_stats, wider.batch_stats
  )
  assert max(jax.tree.leaves(diff)) > 1e-4

  start = history[0]
  assert_trees_close(
    start.ema, {'params': start.params, 'batch_stats': start.batch_stats}
  )
  for before, after, decay in [
    (start, history[1], 0.1),
    (history[1], accumulated, 0.15),
  ]:
    weights = {'params': after.params, 'batch_stats': after.batch_stats}
    expected = jax.tree.map(
      lambda e, w: decay * e + (1 - decay) * w, before.ema, weights
    )
    assert_trees_close(after.ema, expected, rtol=1e-6, atol=1e-7)


def test_remat_changes_memory_not_results():
  config = tiny_config()
  config.model.remat = True
  remat, m_remat = run(config, jax.devices(), 2)
  plain, m_plain = run(tiny_config(), jax.devices(), 2)
  assert_trees_close(remat, plain, rtol=1e-5, atol=1e-7)
  assert_trees_close(m_remat, m_plain, rtol=1e-5)


@pytest.mark.parametrize(
  'key,value,message',
  [
    ('batch_size', 12, 'does not divide over 8 devices'),
    ('eval_batch_size', 100, 'does not divide over 8 devices'),
    ('batch_size', 4096, 'larger than the 1800 training images'),
    ('microbatches', 3, 'does not divide the 2 examples per device'),
    ('steps_per_dispatch', 0, 'must be an integer >= 1'),
  ],
)
def test_batch_that_does_not_fit_is_rejected(key, value, message):
  config = tiny_config()
  config.train[key] = value
  with pytest.raises(ConfigError, match=message):
    loop.setup(config)


def test_without_augmentation_the_step_trains_on_the_plain_images():
  """data.augment=False reaches the device-resident step: its loss is the
  net's on the selected images, uncropped and unflipped."""
  from resnet_jax.train import losses

  config = tiny_config()
  config.data.augment = False
  exp = loop.setup(config, jax.devices()[:1])
  state = loop.initial_state(exp)
  start = jax.device_get(state)
  _, metrics = loop.train_fn(exp, 0)(state)
  b, key = config.train.batch_size, jax.random.key(config.train.seed)
  data = exp.input.data.train

  def loss_on(augmented):
    x, y = augment.train_batch(
      data.images,
      data.labels,
      start.pixel_mean,
      key,
      0,
      b,
      jnp.arange(b),
      augmented,
    )
    logits, _ = exp.model.apply(
      {'params': start.params, 'batch_stats': start.batch_stats},
      x,
      train=True,
      mutable=['batch_stats'],
    )
    return float(jnp.mean(losses.train_loss(logits, y)))

  assert float(metrics['loss']) == pytest.approx(loss_on(False), rel=1e-5)
  assert abs(loss_on(False) - loss_on(True)) > 1e-3  # the crops count


def test_mixing_in_the_step_pairs_across_the_global_batch():
  """With mixup on, each example's partner is taken from the whole global
  batch, not the device's slice: with synchronised BN, one step on two
  devices has one device's loss."""
  result = []
  for devices in (1, 2):
    config = tiny_config(bn_sync=True)
    config.data.mixup_alpha = 0.4
    exp = loop.setup(config, jax.devices()[:devices])
    _, metrics = loop.train_fn(exp, 0)(loop.initial_state(exp))
    result.append(float(metrics['loss']))
  assert result[1] == pytest.approx(result[0], rel=1e-5)
