"""The eval steps' sums against a direct computation, on logits chosen so
that each count tells one rule: top-1, top-5 (not top-4 or top-6), the
masked padding, the loss."""

import types

import jax.numpy as jnp
import numpy as np

from resnet_jax.eval import eval_steps


class FixedLogits:
  """A 'model' whose logits are given (eval_steps calls model.apply)."""

  def __init__(self, logits):
    self.logits = jnp.asarray(logits, jnp.float32)

  def apply(self, variables, x, train):
    assert x.shape[0] == self.logits.shape[0] and not train
    return self.logits


def _state():
  return types.SimpleNamespace(
    params={}, batch_stats={}, pixel_mean=np.zeros((1, 1, 3), np.float32)
  )


def _ranked(label_rank: int, classes: int = 7, label: int = 2):
  """Logits of one example whose label is the `label_rank`-th highest."""
  others = [c for c in range(classes) if c != label]
  order = others[: label_rank - 1] + [label] + others[label_rank - 1 :]
  logits = np.zeros(classes, np.float32)
  logits[order] = np.linspace(3.0, -3.0, classes)  # order[0] highest
  return logits


def _cross_entropy(logits, label):
  return np.log(np.sum(np.exp(logits))) - logits[label]


def test_eval_step_counts_top1_top5_and_the_loss_of_real_examples_only():
  # Label ranked 1st, 5th, 6th; the 4th example is padding (ranked 1st).
  logits = np.stack([_ranked(r) for r in (1, 5, 6, 1)])
  labels = np.full(4, 2, np.int32)
  mask = np.array([True, True, True, False])
  images = np.zeros((4, 2, 2, 3), np.uint8)
  sums = eval_steps.eval_step(
    _state(), images, labels, mask, model=FixedLogits(logits)
  )
  assert float(sums['correct_top1']) == 1.0
  assert float(sums['correct_top5']) == 2.0  # 1st and 5th, not 6th
  assert float(sums['count']) == 3.0
  loss = sum(_cross_entropy(logits[i], 2) for i in range(3))
  np.testing.assert_allclose(float(sums['loss']), loss, rtol=1e-6)


def test_view_probabilities_average_each_images_own_views():
  """Logits (B * V, classes), image-major as normalise's reshape lays
  them: the softmax of each view, averaged over an image's V views."""
  rng = np.random.default_rng(0)
  b, v, classes = 2, 3, 5
  logits = rng.normal(size=(b * v, classes)).astype(np.float32)
  views = np.zeros((b, v, 2, 2, 3), np.uint8)
  probs = eval_steps.view_probabilities(
    _state(), views, model=FixedLogits(logits)
  )
  soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  want = soft.reshape(b, v, classes).mean(1)
  np.testing.assert_allclose(np.asarray(probs), want, rtol=1e-6)


def test_probability_sums_of_labels_and_of_label_sets():
  """One label an example, then ReaL's sets padded with -1: a hit is a
  prediction in the set, the loss -log of the set's probability, and an
  example with an empty set is not counted."""
  probs = np.array(
    [
      [0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.02],
      [0.02, 0.03, 0.05, 0.1, 0.1, 0.2, 0.5],
      [0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05],
    ],
    np.float32,
  )
  mask = np.array([True, True, True])
  single = eval_steps.probability_sums(probs, np.array([0, 1, 6]), mask)
  assert float(single['correct_top1']) == 1.0  # only the first
  assert float(single['correct_top5']) == 1.0  # class 1 is 6th of row 1
  np.testing.assert_allclose(
    float(single['loss']), -np.log([0.5, 0.03, 0.05]).sum(), rtol=1e-6
  )
  # Row 0's first class is 6th, its second 1st; row 1's both in the top 2.
  sets = np.array([[5, 0], [6, 5], [-1, -1]], np.int32)
  real = eval_steps.probability_sums(probs, sets, mask)
  assert float(real['count']) == 2.0  # the empty set is not counted
  assert float(real['correct_top1']) == 2.0
  assert float(real['correct_top5']) == 2.0
  np.testing.assert_allclose(
    float(real['loss']), -np.log([0.53, 0.7]).sum(), rtol=1e-6
  )
