"""The training loss."""

import jax
import jax.numpy as jnp
import optax

from resnet_jax.data.augment import MixedLabels


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


def _loss(logits, labels, label_smoothing: float):
  if not label_smoothing:
    return cross_entropy(logits, labels)
  targets = smooth(labels, logits.shape[-1], label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def train_loss(logits, labels, label_smoothing: float = 0.0):
  """Per-example training loss: cross-entropy against the labels,
  smoothed if asked (0, the paper: exactly cross_entropy). Mixed labels
  weigh the two losses, which equals the cross-entropy against the mixed
  (smoothed) targets, the loss being linear in its targets."""
  if not isinstance(labels, MixedLabels):
    return _loss(logits, labels, label_smoothing)
  own = _loss(logits, labels.labels, label_smoothing)
  partner = _loss(logits, labels.partners, label_smoothing)
  return labels.weight * own + (1.0 - labels.weight) * partner


def distillation_loss(
  logits,
  labels,
  teacher_logits,
  temperature: float,
  hard_weight: float,
  label_smoothing: float = 0.0,
):
  """Per-example knowledge-distillation loss (Hinton et al. 2015, as "Bag
  of Tricks" section 5.3 and its authors' GluonCV code compute it):

    hard_weight * train_loss(logits, labels)
      + (1 - hard_weight) * T^2 * CE(softmax(teacher / T), softmax(logits / T))

  The T^2 keeps the soft term's gradients the size of the hard one's.
  The teacher's logits are constants (no gradient reaches the teacher)."""
  t = float(temperature)
  teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  soft = optax.softmax_cross_entropy(
    logits.astype(jnp.float32) / t, jax.nn.softmax(teacher / t)
  )
  hard = train_loss(logits, labels, label_smoothing)
  return hard_weight * hard + (1.0 - hard_weight) * t**2 * soft


def hard_labels(labels):
  """The example's own labels (for the training error)."""
  return labels.labels if isinstance(labels, MixedLabels) else labels
