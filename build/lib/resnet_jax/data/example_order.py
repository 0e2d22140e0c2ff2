"""Which training example each process reads at each step, for data read
by index (an image folder): every epoch a full permutation of the files.

The run's examples form one stream of positions 0, 1, 2, ...: position p
is example `order_e[p mod N]` of the N training files, e = p div N, where
order_e is a permutation of range(N) drawn from (seed, e) alone. So each
epoch visits every file exactly once, in an order of its own. The global
batch at step s is positions [s B, (s + 1) B); process i of P reads its
B / P consecutive rows of it. The batches therefore depend only on (seed,
step) and the file list, not on the number of processes, and a run
resumed at step s starts reading at position s B without touching the
files before it.

The permutations are stateless TensorFlow ops, computed in the tf.data
graph (31 ms for ImageNet's 1.28M files): the same numbers on every host,
and nothing in Python on the input's path.
"""

import numpy as np

# Distinct streams of the run's seed: the epochs' orders and the sample the
# training mean is estimated from.
_ORDER, _MEAN = 0, 1


def process_stream(
  tf,
  n: int,
  seed: int,
  global_batch: int,
  process: tuple[int, int] = (0, 1),
  start_step: int = 0,
):
  """tf.data of (example indices, stream positions), int64 vectors of
  global_batch / P, one per step from `start_step` on, for process
  `process` = (index, count). Endless."""
  index, count = process
  rows = global_batch // count
  first = start_step * global_batch  # the first position not yet trained on
  key = tf.constant([_ORDER, seed], tf.int64)

  def epoch(e):
    where = tf.range(e * n, (e + 1) * n, dtype=tf.int64)
    mine = tf.logical_and((where // rows) % count == index, where >= first)
    where = tf.boolean_mask(where, mine)
    order = tf.random.experimental.stateless_shuffle(
      tf.range(n, dtype=tf.int64),
      seed=tf.random.experimental.stateless_fold_in(key, e),
    )
    return tf.data.Dataset.from_tensor_slices(
      (tf.gather(order, where - e * n), where)
    )

  epochs = tf.data.Dataset.range(first // n, np.iinfo(np.int64).max)
  return epochs.flat_map(epoch).batch(rows, drop_remainder=True)


def mean_sample(n: int, size: int, seed: int) -> np.ndarray:
  """`size` distinct examples of n drawn at random (sorted): the images
  the training mean is taken from, the same on every process."""
  rng = np.random.default_rng([_MEAN, seed])
  return np.sort(rng.choice(n, size=min(size, n), replace=False))
