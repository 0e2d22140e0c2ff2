"""BN statistics re-estimated from training batches, as the authors did
for their released ImageNet models: each BN's mean and variance become the
plain average, over N training batches, of the batch statistics, instead
of the moving averages."""

import itertools

import jax
import jax.numpy as jnp

from resnet_jax.data import augment
from resnet_jax.eval import evaluator


def training_batches(config, data, state, num_batches: int):
  """This process's share of `num_batches` training batches, prepared as
  in training (without the lighting noise) and normalised: CIFAR's chosen
  and augmented from (seed, step); an image set's first batches of the
  run's permuted stream, a random draw from the whole training set."""
  if data.kind == 'device':
    images, labels = data.arrays
    key = jax.random.key(config.train.seed)
    batch = config.train.batch_size
    positions = jnp.arange(batch)
    for step in range(num_batches):
      yield augment.train_batch(
        images,
        labels,
        state.pixel_mean,
        key,
        step,
        batch,
        positions,
        config.data.augment,
      )[0]
    return
  for images, _ in itertools.islice(data.batches(0), num_batches):
    yield augment.normalise(images, state.pixel_mean)


def recompute(state, model, batches):
  """`state` with each BN's statistics the average, over `batches`
  (float32 NHWC, normalised), of the batches' own; this process's
  batches are averaged with the other processes' at the end."""
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
  total, count = evaluator.process_sum((total, count))
  return state.replace(batch_stats=jax.tree.map(lambda s: s / count, total))
