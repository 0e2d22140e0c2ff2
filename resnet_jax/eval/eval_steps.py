"""Eval steps: sums over the real (unmasked) examples of a batch, so
that padded batches count every example exactly once; and their
data-parallel form (jit of shard_map over the mesh, as the train step)."""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from resnet_jax.data import augment
from resnet_jax.parallel import AXIS
from resnet_jax.train.losses import cross_entropy
from resnet_jax.train.train_state import TrainState


def eval_step(
  state: TrainState, images, labels, mask, *, model, axis_name=None
):
  """Sums over the real (mask=1) examples: correct top-1/top-5, loss."""
  x = augment.normalise(images, state.pixel_mean)
  logits = model.apply(
    {'params': state.params, 'batch_stats': state.batch_stats}, x, train=False
  )
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  mask = mask.astype(jnp.float32)
  sums = dict(
    correct_top1=jnp.sum((top5[:, 0] == labels) * mask),
    correct_top5=jnp.sum(jnp.any(top5 == labels[:, None], -1) * mask),
    loss=jnp.sum(cross_entropy(logits, labels) * mask),
    count=jnp.sum(mask),
  )
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums


def view_probabilities(state: TrainState, views, *, model):
  """Softmax averaged over views: (B, V, H, W, 3) uint8 -> (B, classes).

  The paper's 10-crop and multi-scale tests average scores this way. The
  training mean is resized when the views are larger (multi-scale)."""
  b, v, h, w, c = views.shape
  x = augment.normalise(views.reshape(b * v, h, w, c), state.pixel_mean)
  logits = model.apply(
    {'params': state.params, 'batch_stats': state.batch_stats}, x, train=False
  )
  return jax.nn.softmax(logits.astype(jnp.float32)).reshape(b, v, -1).mean(1)


def probability_sums(probs, labels, mask):
  """Correct top-1/top-5, -log p(label) and count over the real examples.

  Labels (B,) are one class per example; labels (B, K) are a set of
  classes per example, padded with -1 (ReaL): a prediction is correct if
  it is in the set, the loss is -log of the set's probability, and an
  example with an empty set is not counted."""
  top5 = jax.lax.top_k(probs, min(5, probs.shape[-1]))[1]
  mask = mask.astype(jnp.float32)
  if labels.ndim == 1:
    labels = labels[:, None]
  valid = labels >= 0  # (B, K)
  mask = mask * valid[:, 0]
  hits = (top5[:, :, None] == labels[:, None, :]) & valid[:, None, :]
  picked = jnp.sum(
    jnp.take_along_axis(probs, jnp.maximum(labels, 0), axis=1) * valid, -1
  )
  return dict(
    correct_top1=jnp.sum(jnp.any(hits[:, 0], -1) * mask),
    correct_top5=jnp.sum(jnp.any(hits, (1, 2)) * mask),
    loss=jnp.sum(-jnp.log(jnp.maximum(picked, 1e-12)) * mask),
    count=jnp.sum(mask),
  )


def sharded_views_eval_step(mesh, *, model):
  """Compiled eval(state, views, labels, mask) -> sums over the mesh."""

  def per_device(state, views, labels, mask):
    probs = view_probabilities(state, views, model=model)
    return jax.lax.psum(probability_sums(probs, labels, mask), AXIS)

  batch = P(AXIS)
  return jax.jit(
    jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), batch, batch, batch), out_specs=P()
    )
  )


def sharded_view_probabilities(mesh, *, model):
  """Compiled probs(state, views) -> (B, classes), views split over the
  mesh: for tests whose scores are averaged across calls (multi-scale)."""
  per_device = functools.partial(view_probabilities, model=model)
  return jax.jit(
    jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS)
    )
  )


def sharded_eval_step(mesh, *, model):
  """Compiled eval(state, images, labels, mask) on batches split over the
  mesh; returns the sums over the whole global batch."""
  step = functools.partial(eval_step, model=model, axis_name=AXIS)
  batch = P(AXIS)
  return jax.jit(
    jax.shard_map(
      step, mesh=mesh, in_specs=(P(), batch, batch, batch), out_specs=P()
    )
  )
