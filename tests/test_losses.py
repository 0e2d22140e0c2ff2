"""The training loss: cross-entropy, with label smoothing as a switch."""

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.data import augment
from resnet_jax.train import losses

LOGITS = jnp.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]])
LABELS = jnp.array([0, 2])


def test_no_smoothing_is_exactly_the_cross_entropy():
  """0.0, and the default (the paper's loss), is the plain softmax
  cross-entropy, -log softmax(logits)[label]."""
  direct = -jax.nn.log_softmax(LOGITS)[jnp.arange(2), LABELS]
  np.testing.assert_allclose(
    losses.cross_entropy(LOGITS, LABELS), direct, rtol=1e-6
  )
  for loss in (
    losses.train_loss(LOGITS, LABELS, 0.0),
    losses.train_loss(LOGITS, LABELS),
  ):
    np.testing.assert_array_equal(loss, losses.cross_entropy(LOGITS, LABELS))


def test_smoothed_loss_against_its_formula():
  a, k = 0.1, LOGITS.shape[1]
  log_p = np.asarray(jax.nn.log_softmax(LOGITS))
  # -sum_c q_c log p_c with q = 1 - a + a/K on the label, a/K elsewhere.
  expected = [
    -sum(
      ((1 - a + a / k) if c == label else a / k) * log_p[i, c] for c in range(k)
    )
    for i, label in enumerate(np.asarray(LABELS))
  ]
  np.testing.assert_allclose(
    losses.train_loss(LOGITS, LABELS, a), expected, rtol=1e-6
  )
  targets = np.asarray(losses.smooth(LABELS, k, a))
  np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(targets[0, 0], 1 - a + a / k, rtol=1e-6)


def test_mixed_labels_loss_is_the_cross_entropy_of_mixed_smoothed_targets():
  a, k = 0.1, LOGITS.shape[1]
  weight = jnp.array([0.3, 1.0])
  mixed = augment.MixedLabels(LABELS, jnp.array([1, 3]), weight)
  targets = np.asarray(weight)[:, None] * np.asarray(
    losses.smooth(LABELS, k, a)
  ) + (1 - np.asarray(weight))[:, None] * np.asarray(
    losses.smooth(jnp.array([1, 3]), k, a)
  )
  log_p = np.asarray(jax.nn.log_softmax(LOGITS))
  np.testing.assert_allclose(
    losses.train_loss(LOGITS, mixed, a), -(targets * log_p).sum(1), rtol=1e-6
  )
  # A weight of 1 is the example's own loss.
  np.testing.assert_allclose(
    losses.train_loss(LOGITS, mixed, a)[1],
    losses.train_loss(LOGITS, LABELS, a)[1],
    rtol=1e-6,
  )


def test_the_training_error_of_mixed_examples_reads_their_own_labels():
  """steps.py's error compares the prediction with hard_labels: a mixed
  example's own label (not its partner's, not the three fields)."""
  own, partners = jnp.array([0, 2, 1]), jnp.array([1, 0, 2])
  mixed = augment.MixedLabels(own, partners, jnp.array([0.7, 0.6, 0.9]))
  np.testing.assert_array_equal(losses.hard_labels(mixed), own)
  np.testing.assert_array_equal(losses.hard_labels(own), own)
