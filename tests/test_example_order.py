"""The training order of an image folder at ImageNet's ratio of data to
buffer, simulated: a generated class-sorted listing of 51,200 files over
512 classes, no file read. What 40 images cannot show: whether batches are
mixed like an iid draw, whether every epoch is a permutation, whether
processes' shards are disjoint and complete, whether the mean's sample
spans the classes.
"""

import math

import numpy as np
import pytest

from resnet_jax.data import example_order
from resnet_jax.data import tf_cpu

CLASSES, PER_CLASS = 512, 100
N = CLASSES * PER_CLASS  # 51,200 files, sorted by class as listed
LABELS = np.repeat(np.arange(CLASSES), PER_CLASS)
BATCH = 256
# ImageNet's default buffer, 16,384 examples of 1,281,167, at this size.
SCALED_BUFFER = round(16384 * N / 1_281_167)  # 655


def iid_distinct_classes(batch: int) -> float:
  """Expected distinct classes in `batch` files drawn at random without
  replacement: each class is missed with probability C(N-m, B) / C(N, B)."""
  missed = math.exp(
    sum(math.log((N - PER_CLASS - j) / (N - j)) for j in range(batch))
  )
  return CLASSES * (1 - missed)


def stream(process=(0, 1), start: int = 0, seed: int = 0):
  """The pipeline's own stream of (indices, positions), as NumPy."""
  tf = tf_cpu.tensorflow()
  ds = example_order.process_stream(tf, N, seed, BATCH, process, start)
  return ds.as_numpy_iterator()


def global_batches(steps: int, start: int = 0, seed: int = 0, processes=1):
  """(steps, BATCH) example indices, the processes' rows side by side."""
  streams = [stream((i, processes), start, seed) for i in range(processes)]
  return np.stack(
    [np.concatenate([next(s)[0] for s in streams]) for _ in range(steps)]
  )


def distinct(batches) -> float:
  return float(np.mean([len(np.unique(LABELS[b])) for b in batches]))


def test_batches_hold_as_many_classes_as_an_iid_draw():
  expected = iid_distinct_classes(BATCH)  # about 203 of 512
  batches = global_batches(2 * N // BATCH)  # two epochs
  assert distinct(batches) >= 0.9 * expected
  # Through the whole run, not just on average: no stretch of classes.
  assert min(len(np.unique(LABELS[b])) for b in batches) >= 0.8 * expected


def test_a_shuffle_buffer_alone_would_fail_that_test():
  """The check can fail: the former pipeline (the sorted list through a
  shuffle buffer, as tf.data's shuffle does it: emit a random slot, refill
  it with the next file) gives batches of a few classes, in order."""
  rng = np.random.default_rng(0)
  buffer, order = list(range(SCALED_BUFFER)), []
  for incoming in range(SCALED_BUFFER, N):
    slot = rng.integers(len(buffer))
    order.append(buffer[slot])
    buffer[slot] = incoming
  batches = np.reshape(order[: len(order) // BATCH * BATCH], (-1, BATCH))
  assert distinct(batches) < 0.2 * iid_distinct_classes(BATCH)


def test_every_epoch_visits_every_file_once_in_its_own_order():
  steps = 3 * N // BATCH + 1  # three epochs and a bit: batches straddle
  stream = global_batches(steps).ravel()
  epochs = [stream[e * N : (e + 1) * N] for e in range(3)]
  for epoch in epochs:
    np.testing.assert_array_equal(np.sort(epoch), np.arange(N))
  assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize('processes', [2, 4])
def test_process_shards_are_disjoint_cover_everything_and_match_one(
  processes,
):
  steps = N // BATCH
  one = global_batches(steps)
  streams = [stream((i, processes)) for i in range(processes)]
  shards = [np.concatenate([next(s)[0] for _ in range(steps)]) for s in streams]
  everything = np.concatenate(shards)
  assert len(np.unique(everything)) == len(everything)  # disjoint
  assert set(everything) == set(one.ravel())  # together: the whole epoch
  assert len(everything) == steps * BATCH and steps * BATCH > 0.99 * N
  # And each global batch is the one-process batch, row for row.
  np.testing.assert_array_equal(global_batches(steps, processes=processes), one)


def test_a_resumed_stream_equals_the_uninterrupted_one():
  start = N // BATCH - 3  # resumed just before an epoch boundary
  whole = global_batches(start + 8, processes=2)
  resumed = global_batches(8, start=start, processes=2)
  np.testing.assert_array_equal(resumed, whole[start:])
  _, where = next(stream((1, 2), start))
  np.testing.assert_array_equal(
    where, start * BATCH + BATCH // 2 + np.arange(BATCH // 2)
  )


def test_the_seed_changes_the_order():
  assert not np.array_equal(
    global_batches(1, seed=0), global_batches(1, seed=1)
  )


def test_the_mean_sample_spans_the_classes():
  # 10,000 of ImageNet's 1.28M is about 10 per class; 5,120 here.
  sample = example_order.mean_sample(N, 5120, seed=0)
  assert len(np.unique(sample)) == 5120
  assert len(np.unique(LABELS[sample])) >= 0.95 * CLASSES
  assert len(np.unique(LABELS[:5120])) < 0.2 * CLASSES  # the first N
  np.testing.assert_array_equal(
    sample, example_order.mean_sample(N, 5120, seed=0)
  )
  assert len(example_order.mean_sample(100, 5120, seed=0)) == 100
