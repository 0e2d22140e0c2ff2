"""Evaluation over a whole split: every example counted exactly once."""

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.data import cifar
from resnet_jax.train import steps


def evaluate(
  state, split: cifar.Split, *, mesh, model, batch_size: int, eval_fn=None
) -> dict:
  """Accuracy, loss and count over every example of `split`: the last batch
  is padded and masked, so each example counts exactly once."""
  eval_fn = eval_fn or steps.sharded_eval_step(mesh, model=model)
  per_process = batch_size // jax.process_count()
  rows = slice(
    jax.process_index() * per_process, (jax.process_index() + 1) * per_process
  )
  totals = None
  for start in range(0, len(split), batch_size):
    images = split.images[start : start + batch_size]
    labels = split.labels[start : start + batch_size]
    mask = np.ones(len(labels), np.float32)
    pad = batch_size - len(labels)
    if pad:  # pad the last batch; the mask drops the padding
      images = np.concatenate(
        [images, np.zeros((pad, *images.shape[1:]), images.dtype)]
      )
      labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
      mask = np.concatenate([mask, np.zeros(pad, np.float32)])
    sums = eval_fn(
      state, *steps.shard_batch(mesh, (images[rows], labels[rows], mask[rows]))
    )
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return eval_metrics(totals)


def process_sum(tree):
  """Host values summed over all processes (the values themselves if one)."""
  tree = jax.device_get(tree)
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils

  gathered = multihost_utils.process_allgather(tree)
  return jax.tree.map(lambda x: np.sum(x, axis=0), gathered)


def eval_metrics(totals) -> dict:
  """Summed counts from the eval steps -> accuracies, mean loss, count."""
  totals = jax.device_get(totals)
  count = float(totals['count'])
  return dict(
    top1_accuracy=float(totals['correct_top1']) / count,
    top5_accuracy=float(totals['correct_top5']) / count,
    top1_error=1 - float(totals['correct_top1']) / count,
    loss=float(totals['loss']) / count,
    num_examples=int(round(count)),
  )


def recompute_batch_stats(state, model, batches):
  """BN statistics re-estimated as the plain average, over `batches`, of
  each batch's mean and variance, replacing the moving averages (as the
  authors did for their released ImageNet models). `batches` yields
  float32 NHWC images, normalised as in training: this process's share,
  averaged with the other processes' at the end.
  """
  exact = model.clone(bn_momentum=0.0, bn_axis_name=None)  # stats = batch's

  @jax.jit
  def batch_stats(x):
    _, updates = exact.apply(
      {'params': state.params, 'batch_stats': state.batch_stats},
      x,
      train=True,
      mutable=['batch_stats'],
    )
    return updates['batch_stats']

  total, count = None, 0
  for x in batches:
    stats = batch_stats(x)
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if not count:
    return state
  total, count = process_sum((total, count))
  return state.replace(batch_stats=jax.tree.map(lambda s: s / count, total))
