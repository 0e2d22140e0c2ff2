"""The training loss."""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels):
  """Per-example softmax cross-entropy, in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), labels
  )


def smooth(labels, num_classes: int, label_smoothing: float):
  """Targets (N, classes): one-hot labels moved `label_smoothing` of the
  way to uniform (Szegedy et al. 2016): 1 - a + a / K on the label, a / K
  elsewhere."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes


def train_loss(logits, labels, label_smoothing: float = 0.0):
  """Per-example training loss: cross-entropy against the labels,
  smoothed if asked (0, the paper: exactly cross_entropy)."""
  if not label_smoothing:
    return cross_entropy(logits, labels)
  targets = smooth(labels, logits.shape[-1], label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
