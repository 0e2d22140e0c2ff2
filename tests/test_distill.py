"""Knowledge distillation: the loss against its formula, the teacher's
logits in the compiled step against a direct computation, and the
teachers refused before anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.data import augment
from resnet_jax.errors import ConfigError
from resnet_jax.train import loop
from resnet_jax.train import losses
from tests.helpers import from_parent
from tests.helpers import load_config
from tests.helpers import tiny_config

LOGITS = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]], np.float32)
TEACHER = np.array([[1.0, 3.0, 0.0, -2.0], [0.5, 0.5, 4.0, 0.0]], np.float32)
LABELS = np.array([0, 2])


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize('t,w,smoothing', [(20.0, 0.5, 0.0), (2.0, 0.3, 0.1)])
def test_distillation_loss_against_its_formula(t, w, smoothing):
  k = LOGITS.shape[1]
  targets = np.eye(k)[LABELS] * (1 - smoothing) + smoothing / k
  hard = -(targets * _log_softmax(LOGITS)).sum(-1)
  teacher_p = np.exp(_log_softmax(TEACHER / t))
  soft = -(teacher_p * _log_softmax(LOGITS / t)).sum(-1)
  expected = w * hard + (1 - w) * t**2 * soft
  got = losses.distillation_loss(
    jnp.asarray(LOGITS), LABELS, jnp.asarray(TEACHER), t, w, smoothing
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Only the student's logits carry a gradient.
  grad = jax.grad(
    lambda z: losses.distillation_loss(LOGITS, LABELS, z, t, w).sum()
  )(jnp.asarray(TEACHER))
  assert not np.asarray(grad).any()


def test_distillation_loss_defaults_and_bfloat16_inputs():
  """No label smoothing unless asked; bfloat16 logits (train.dtype
  bfloat16) are scored in float32: the loss of the same values in
  float32, not of bfloat16 arithmetic."""
  args = (LABELS, jnp.asarray(TEACHER), 20.0, 0.5)
  unsmoothed = losses.distillation_loss(jnp.asarray(LOGITS), *args, 0.0)
  np.testing.assert_array_equal(
    losses.distillation_loss(jnp.asarray(LOGITS), *args), unsmoothed
  )
  low = jnp.asarray(LOGITS * 7.3, jnp.bfloat16)  # not exact in bfloat16
  teacher = jnp.asarray(TEACHER * 7.3, jnp.bfloat16)
  got = losses.distillation_loss(low, LABELS, teacher, 20.0, 0.5)
  assert got.dtype == jnp.float32
  expected = losses.distillation_loss(
    low.astype(jnp.float32), LABELS, teacher.astype(jnp.float32), 20.0, 0.5
  )
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  """A trained ResNet-8's workdir (four steps: a teacher need not be good
  to be tested); in a child process, the parent's."""
  if made := from_parent('teacher'):
    return made
  workdir = str(tmp_path_factory.mktemp('teacher'))
  config = tiny_config(checkpoint_every=4)
  config.data.eval_on = 'none'
  # Trained on fewer images than the students: another training mean.
  config.data.validation_size = 1000
  loop.train_and_evaluate(config, workdir, jax.devices()[:1])
  return workdir


def _student(teacher_dir, **optim):
  config = tiny_config(teacher=teacher_dir)
  config.data.eval_on = 'none'
  config.model.shortcut = 'B'  # not the teacher's net
  config.data.mixup_alpha = 0.4  # the teacher sees the mixed images
  config.optim.update(optim)
  return config


def test_the_steps_loss_uses_the_teachers_logits_of_the_same_images(teacher):
  config = _student(
    teacher,
    distill_temperature=4.0,
    distill_hard_weight=0.25,
    label_smoothing=0.1,  # the hard term's
  )
  exp = loop.setup(config, jax.devices()[:1])
  state = loop.initial_state(exp)
  teacher_weights = jax.device_get(exp.teacher.load(exp.mesh))
  start = jax.device_get(state)
  _, metrics = loop.train_fn(exp, 0)(state)

  # The first batch by hand: selected, cropped, mixed as the step does.
  b = config.train.batch_size
  key = jax.random.key(config.train.seed)
  data = exp.input.data.train
  x, y = augment.train_batch(
    data.images, data.labels, start.pixel_mean, key, 0, b, jnp.arange(b)
  )
  x, y = augment.mix(key, 0, jnp.arange(b), x, y, exp.mixing)
  logits, _ = exp.model.apply(
    {'params': start.params, 'batch_stats': start.batch_stats},
    x,
    train=True,
    mutable=['batch_stats'],
  )
  # The teacher's own normalisation: the pixels less its mean.
  t_logits = exp.teacher.model.apply(
    {k: teacher_weights[k] for k in ('params', 'batch_stats')},
    x + start.pixel_mean - teacher_weights['pixel_mean'],
    train=False,
  )
  hard = losses.train_loss(logits, y, 0.1)
  soft = losses.distillation_loss(logits, y, t_logits, 4.0, 0.0) / 16.0
  expected = float(jnp.mean(0.25 * hard + 0.75 * 16.0 * soft))
  assert float(metrics['loss']) == pytest.approx(expected, rel=1e-5)
  assert abs(expected - float(jnp.mean(hard))) > 0.01  # the teacher counts


@pytest.mark.xla_default_emitters
def test_two_steps_in_one_call_distil_as_two_calls(teacher):
  """train.steps_per_dispatch > 1: the teacher goes into the multi-step
  program too. Two steps in one call end where two one-step calls do, bit
  for bit (the one-step call's loss is checked against its formula
  above, with the teacher counting)."""
  exp = loop.setup(_student(teacher), jax.devices()[:1])
  one_per_call = loop.train_fn(exp, 0)
  state = loop.initial_state(exp)
  for _ in range(2):
    state, metrics = one_per_call(state)
  two, two_metrics = loop.train_fn(exp, 0)(loop.initial_state(exp), 2)
  assert int(two.step) == int(state.step) == 2
  assert float(two_metrics['loss']) == float(metrics['loss'])
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(two.params),
    jax.device_get(state.params),
  )


def test_teachers_that_cannot_teach_are_refused(teacher, tmp_path):
  cases = [
    (str(tmp_path / 'nowhere'), {}, 'train.teacher: .* not found'),
    (teacher, {'num_classes': 100}, 'predicts 10 classes; this run has'),
    (teacher, {'teacher_weights': 'ema'}, 'keeps no moving average'),
  ]
  for path, change, message in cases:
    config = _student(path)
    if 'num_classes' in change:
      config.data.num_classes = change['num_classes']
    if 'teacher_weights' in change:
      config.train.teacher_weights = change['teacher_weights']
    with pytest.raises(ConfigError, match=message):
      loop.setup(config, jax.devices()[:1])
  row = load_config('configs/bag_of_tricks.py:distill,family=cifar')
  with pytest.raises(ConfigError, match='this config distils knowledge: set'):
    loop.setup(row, jax.devices()[:1])
  with pytest.raises(ConfigError, match="this run's own workdir"):
    loop.setup(_student(teacher), jax.devices()[:1], workdir=teacher)
  empty = tmp_path / 'untrained'
  empty.mkdir()
  (empty / 'config.json').write_text(
    open(f'{teacher}/config.json').read()
  )
  with pytest.raises(ConfigError, match='no checkpoint in .*train the teacher'):
    loop.setup(_student(str(empty)), jax.devices()[:1])
