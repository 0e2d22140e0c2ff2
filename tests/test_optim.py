"""The paper's learning-rate schedule and weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.train import optim
from tests.helpers import load_config


@pytest.mark.parametrize(
  'arg,expected',
  [
    # ResNet-110: 0.01 until iteration 400, then 0.1 (section 4.2).
    (
      'resnet110',
      {
        0: 0.01,
        399: 0.01,
        400: 0.1,
        31999: 0.1,
        32000: 0.01,
        47999: 0.01,
        48000: 0.001,
        63999: 0.001,
      },
    ),
    (
      'resnet20',
      {0: 0.1, 399: 0.1, 400: 0.1, 31999: 0.1, 32000: 0.01, 48000: 0.001},
    ),
  ],
)
def test_paper_schedule(arg, expected):
  config = load_config(f'configs/cifar10.py:{arg}')
  lr = optim.schedule(config, steps_per_epoch=390)
  for step, value in expected.items():
    assert float(lr(jnp.asarray(step))) == pytest.approx(value), step


def test_epoch_units_and_linear_scaling():
  config = load_config('configs/cifar10.py:resnet20')
  config.train.unit = 'epochs'
  config.train.length = 90
  config.optim.lr_boundaries = (30, 60)
  config.optim.linear_scaling = True
  config.train.batch_size = 512
  lr = optim.schedule(config, steps_per_epoch=100)
  assert float(lr(2999)) == pytest.approx(0.4)  # 0.1 * 512 / 128
  assert float(lr(3000)) == pytest.approx(0.04)
  assert float(lr(6000)) == pytest.approx(0.004)


def test_linear_warmup_and_cosine():
  config = load_config('configs/cifar10.py:resnet20')
  config.optim.warmup, config.optim.warmup_steps = 'linear', 10
  config.optim.schedule = 'cosine'
  config.train.length = 100
  lr = optim.schedule(config, steps_per_epoch=10)
  assert float(lr(0)) == pytest.approx(0.01)
  assert float(lr(9)) == pytest.approx(0.1)
  # The cosine runs over the 90 steps after the warm-up (Bag of Tricks,
  # GluonCV): the peak right after it, half of it at 10 + 45, 0 at the end.
  assert float(lr(10)) == pytest.approx(0.1)
  assert float(lr(55)) == pytest.approx(0.05, rel=1e-6)
  assert float(lr(25)) == pytest.approx(
    0.05 * (1 + np.cos(np.pi * 15 / 90)), rel=1e-6
  )
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize('decoupled', [False, True])
@pytest.mark.parametrize('mask', ['all', 'kernels'])
def test_weight_decay_forms(decoupled, mask):
  config = load_config('configs/cifar10.py:resnet20')
  config.optim.decoupled_weight_decay = decoupled
  config.optim.weight_decay_on = mask
  params = {'conv': {'kernel': jnp.ones(3)}, 'bn': {'scale': jnp.ones(3)}}
  tx, _ = optim.optimizer(config, params, steps_per_epoch=10)
  grads = jax.tree.map(jnp.zeros_like, params)
  state = tx.init(params)
  for _ in range(2):  # momentum shows the coupled/decoupled difference
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  kernel, scale = params['conv']['kernel'][0], params['bn']['scale'][0]
  # Coupled L2 enters the momentum buffer, so step 2 also moves by 0.9 of
  # step 1's decay; decoupled decay (SGDW) stays out of it.
  first = 0.1 * 1e-4
  second = 0.1 * 1e-4 * (1 - first) + (0.9 * first if not decoupled else 0)
  np.testing.assert_allclose(kernel, 1 - first - second, rtol=1e-6)
  expected_scale = 1 - first - second if mask == 'all' else 1.0
  np.testing.assert_allclose(scale, expected_scale, rtol=1e-6)


@pytest.mark.parametrize(
  'key,value',
  [
    ('optim.schedule', 'poly'),
    ('optim.warmup', 'exp'),
    ('optim.weight_decay_on', 'some'),
    ('train.unit', 'hours'),
  ],
)
def test_bad_values(key, value):
  config = load_config('configs/cifar10.py:resnet110')
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(ConfigError, match=name):
    optim.optimizer(config, {'w': jnp.ones(1)}, steps_per_epoch=10)


# A two-layer example: a kernel and a bias, as the trust ratio sees them.
PARAMS = {
  'dense': {
    'kernel': jnp.array([[3.0, 4.0], [0.0, 0.0]]),  # ||w|| = 5
    'bias': jnp.array([1.0, -1.0]),
  },
}
GRADS = {
  'dense': {
    'kernel': jnp.array([[0.5, 0.0], [0.0, 1.0]]),
    'bias': jnp.array([0.25, 0.5]),
  },
}


def one_update(name, **optim_keys):
  config = load_config('configs/cifar10.py:resnet20')
  config.optim.update(dict(optimizer=name, **optim_keys))
  tx, lr = optim.optimizer(config, PARAMS, steps_per_epoch=390)
  updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  return jax.tree.map(np.asarray, updates), float(lr(0))


def test_lars_scales_kernels_by_their_trust_ratio_and_leaves_biases():
  updates, lr = one_update(
    'lars', weight_decay=1e-2, lars_trust_coefficient=0.001
  )
  w, g = np.asarray(PARAMS['dense']['kernel']), GRADS['dense']['kernel']
  decayed = g + 1e-2 * w
  ratio = 0.001 * np.linalg.norm(w) / np.linalg.norm(decayed)
  np.testing.assert_allclose(
    updates['dense']['kernel'], -lr * ratio * decayed, rtol=1e-6
  )
  # Biases: neither decay nor trust ratio (the first momentum step is g).
  np.testing.assert_allclose(
    updates['dense']['bias'], -lr * GRADS['dense']['bias'], rtol=1e-6
  )


def test_adamw_first_step_is_the_sign_plus_decoupled_decay():
  updates, lr = one_update('adamw', weight_decay=0.1, weight_decay_on='all')
  for name in ('kernel', 'bias'):
    w, g = np.asarray(PARAMS['dense'][name]), np.asarray(GRADS['dense'][name])
    # Bias-corrected first moments: m = g, v = g^2.
    expected = -lr * (g / (np.abs(g) + 1e-8) + 0.1 * w)
    np.testing.assert_allclose(updates['dense'][name], expected, rtol=1e-5)


def test_gradients_are_clipped_to_the_global_norm_first():
  norm = float(optax.tree.norm(GRADS))
  clipped, lr = one_update('sgd', clip_grad_norm=norm / 4, weight_decay=0.0)
  plain, _ = one_update('sgd', weight_decay=0.0)
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(
      clipped['dense'][name], plain['dense'][name] / 4, rtol=1e-6
    )
  unclipped, _ = one_update('sgd', clip_grad_norm=norm * 2, weight_decay=0.0)
  jax.tree.map(np.testing.assert_array_equal, unclipped, plain)


def test_unknown_optimizer_is_refused():
  with pytest.raises(ConfigError, match="optim.optimizer='adam' is not one"):
    one_update('adam')


# Fine-tuning's two groups, each with a kernel and a BN scale.
TWO_GROUPS = {
  'head': {'kernel': jnp.array([3.0, 4.0]), 'bias': jnp.array([1.0])},
  'conv_init': {'kernel': jnp.array([0.6, 0.8]), 'scale': jnp.array([2.0])},
}


def finetune_update(mode, grads=None, **optim_keys):
  config = load_config(f'configs/finetune.py:resnet8,family=cifar,mode={mode}')
  config.optim.update(optim_keys)
  config.finetune.backbone_lr_scale = 1.0  # the groups' steps compare
  tx, lr = optim.optimizer(config, TWO_GROUPS, steps_per_epoch=10)
  grads = grads or jax.tree.map(jnp.ones_like, TWO_GROUPS)
  updates, _ = tx.update(grads, tx.init(TWO_GROUPS), TWO_GROUPS)
  return jax.tree.map(np.asarray, updates), float(lr(0))


def test_unknown_finetuning_mode_is_refused():
  """Past the config's range check (a config edited in code): the
  optimizer itself names the mode and the valid ones."""
  config = load_config('configs/finetune.py:resnet8,family=cifar,mode=full')
  config.finetune.mode = 'head_only'
  with pytest.raises(
    ConfigError,
    match="finetune.mode='head_only' is not one of full, linear_probe",
  ):
    optim.optimizer(config, TWO_GROUPS, steps_per_epoch=10)


def test_unknown_optimizer_is_refused_by_name():
  """Past the range check, as above: the optimizer names the valid ones
  (mutmut: the message's list was not pinned)."""
  config = load_config('configs/quickstart.py:resnet8')
  config.optim.optimizer = 'adam'
  with pytest.raises(
    ConfigError, match="^optim.optimizer='adam' is not one of sgd, adamw, lars$"
  ):
    optim.optimizer(config, TWO_GROUPS, steps_per_epoch=10)


@pytest.mark.parametrize('mode', ['full', 'linear_probe'])
@pytest.mark.parametrize('name', ['sgd', 'adamw', 'lars'])
def test_finetuning_decays_and_trusts_exactly_the_kernels_of_each_group(
  mode, name
):
  """The masks meet optax.multi_transform's trees (a structure error at
  init before): with zero gradients only the decay moves a parameter, so
  the step is -lr * decay * w on each trained kernel and 0 elsewhere."""
  zero = jax.tree.map(jnp.zeros_like, TWO_GROUPS)
  keys = dict(optimizer=name, weight_decay=0.1, weight_decay_on='kernels')
  updates, lr = finetune_update(mode, zero, momentum=0.0, **keys)
  trained = ('head', 'conv_init') if mode == 'full' else ('head',)
  for group, leaves in TWO_GROUPS.items():
    for leaf, w in leaves.items():
      got = updates[group][leaf]
      if leaf != 'kernel' or group not in trained:
        np.testing.assert_array_equal(got, 0 * got)
      elif name == 'lars':  # the trust ratio of the decayed step: ||w|| / ||d w||
        expected = -lr * 0.001 * np.linalg.norm(w) / np.linalg.norm(0.1 * w)
        np.testing.assert_allclose(got, expected * 0.1 * w, rtol=1e-5)
      else:
        np.testing.assert_allclose(got, -lr * 0.1 * np.asarray(w), rtol=1e-5)


def test_finetuning_clips_by_the_norm_over_both_groups():
  """Head gradients [3, 4] and backbone [0.3, 0.4] (BN and bias zero),
  clip 1: both scaled by 1 / ||all|| = 1 / 5.025, not each group to its
  own norm (which gave the head [0.6, 0.8] and left the backbone)."""
  grads = jax.tree.map(jnp.zeros_like, TWO_GROUPS)
  grads['head']['kernel'] = jnp.array([3.0, 4.0])
  grads['conv_init']['kernel'] = jnp.array([0.3, 0.4])
  updates, lr = finetune_update(
    'full', grads, clip_grad_norm=1.0, weight_decay=0.0, momentum=0.0
  )
  scale = 1 / np.sqrt(25 + 0.25)
  for group in ('head', 'conv_init'):
    np.testing.assert_allclose(
      updates[group]['kernel'],
      -lr * scale * np.asarray(grads[group]['kernel']),
      rtol=1e-6,
    )


def two_updates(name, **optim_keys):
  """The second update of `name` for GRADS then 2 x GRADS (constant
  learning rate), and that rate: momenta and moments at work."""
  config = load_config('configs/cifar10.py:resnet20')
  config.optim.update({'optimizer': name, 'weight_decay': 0.0, **optim_keys})
  config.optim.lr_boundaries = ()
  tx, lr = optim.optimizer(config, PARAMS, steps_per_epoch=390)
  state = tx.init(PARAMS)
  _, state = tx.update(GRADS, state, PARAMS)
  twice = jax.tree.map(lambda g: 2 * g, GRADS)
  updates, _ = tx.update(twice, state, PARAMS)
  return jax.tree.map(np.asarray, updates), float(lr(0))


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_and_nesterov_against_their_formulas(nesterov):
  updates, lr = two_updates('sgd', momentum=0.8, nesterov=nesterov)
  g1 = np.asarray(GRADS['dense']['kernel'])
  g2 = 2 * g1
  trace = g2 + 0.8 * g1  # v = m v + g
  step = g2 + 0.8 * trace if nesterov else trace
  np.testing.assert_allclose(updates['dense']['kernel'], -lr * step, rtol=1e-6)


def test_adamw_moments_and_epsilon_against_their_formulas():
  b1, b2, eps, wd = 0.7, 0.9, 0.5, 0.1
  updates, lr = two_updates(
    'adamw', adam_b1=b1, adam_b2=b2, adam_eps=eps, weight_decay=wd
  )
  w = np.asarray(PARAMS['dense']['kernel'])
  g1 = np.asarray(GRADS['dense']['kernel'])
  g2 = 2 * g1
  m = b1 * (1 - b1) * g1 + (1 - b1) * g2
  v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
  m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
  expected = -lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * w)
  np.testing.assert_allclose(updates['dense']['kernel'], expected, rtol=1e-5)


@pytest.mark.parametrize('nesterov', [False, True])
def test_lars_momentum_trust_coefficient_and_bn_against_their_formulas(
  nesterov,
):
  c, m, wd = 0.02, 0.8, 1e-2
  updates, lr = two_updates(
    'lars',
    lars_trust_coefficient=c,
    momentum=m,
    nesterov=nesterov,
    weight_decay=wd,
  )
  w = np.asarray(PARAMS['dense']['kernel'])

  def trusted(g):  # the kernel's step before momentum
    d = g + wd * w
    return c * np.linalg.norm(w) / np.linalg.norm(d) * d

  g1 = np.asarray(GRADS['dense']['kernel'])
  s1, s2 = trusted(g1), trusted(2 * g1)
  trace = s2 + m * s1
  step = s2 + m * trace if nesterov else trace
  np.testing.assert_allclose(updates['dense']['kernel'], -lr * step, rtol=1e-5)
  # The bias: momentum SGD alone (no decay, no trust ratio).
  b1 = np.asarray(GRADS['dense']['bias'])
  trace = 2 * b1 + m * b1
  step = 2 * b1 + m * trace if nesterov else trace
  np.testing.assert_allclose(updates['dense']['bias'], -lr * step, rtol=1e-5)


def test_lars_trust_ratio_of_zero_weights_or_gradients_is_one():
  config = load_config('configs/cifar10.py:resnet20')
  config.optim.update(optimizer='lars', weight_decay=0.0, momentum=0.0)
  zero = {'dense': {'kernel': jnp.zeros((2, 2)), 'bias': jnp.zeros(2)}}
  tx, lr = optim.optimizer(config, zero, steps_per_epoch=390)
  grads = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
  updates, _ = tx.update(grads, tx.init(zero), zero)
  np.testing.assert_allclose(updates['dense']['kernel'], -float(lr(0)))
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, grads), tx.init(zero), zero)
  np.testing.assert_array_equal(updates['dense']['kernel'], 0.0)


def test_full_finetuning_scales_the_backbones_step():
  config = load_config('configs/finetune.py:resnet8,family=cifar,mode=full')
  config.optim.update(weight_decay=0.0, momentum=0.0)
  config.finetune.backbone_lr_scale = 0.25
  tx, lr = optim.optimizer(config, TWO_GROUPS, steps_per_epoch=10)
  grads = jax.tree.map(jnp.ones_like, TWO_GROUPS)
  updates, _ = tx.update(grads, tx.init(TWO_GROUPS), TWO_GROUPS)
  np.testing.assert_allclose(updates['head']['kernel'], -float(lr(0)))
  np.testing.assert_allclose(updates['conv_init']['kernel'], -0.25 * float(lr(0)))
