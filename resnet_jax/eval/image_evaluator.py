"""ImageNet evaluation with the paper's protocols: one centre crop, 10
crops, or the fully-convolutional multi-scale test.

Each process evaluates its own shard of the split on its own devices and
the sums are added across processes once, at the end. Nothing inside the
loop is collective, so processes holding different numbers of images
(50,000 over 3 hosts), or images of different shapes (multi-scale), never
wait on each other: every image is counted exactly once.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from resnet_jax.data import image_sets
from resnet_jax.errors import ConfigError
from resnet_jax.eval import evaluator
from resnet_jax.train import steps


def local_mesh() -> jax.sharding.Mesh:
  return steps.make_mesh(jax.local_devices())


def localise(mesh, tree):
  """Arrays replicated on the whole (maybe multi-host) mesh -> the same
  values replicated on this process's devices only."""
  sharding = NamedSharding(mesh, P())

  def move(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return jax.device_put(x, sharding)

  return jax.tree.map(move, tree)


def _to_mesh(mesh, batches):
  """Host batches split over the local mesh, two in flight."""
  sharding = NamedSharding(mesh, P(steps.AXIS))
  return steps.prefetch(lambda b: jax.device_put(b, sharding), batches)


class Evaluator:
  """evaluator(state) -> metrics of `protocol` on `split`. Compiled steps
  are kept, so a training run's repeated evaluations compile once (once
  per image shape for multi-scale)."""

  def __init__(
    self, data_cfg, *, model, batch_size: int, protocol: str, split: str = 'val'
  ):
    self.mesh = local_mesh()
    per_process = batch_size // jax.process_count()
    if (
      batch_size <= 0
      or per_process * jax.process_count() != batch_size
      or (per_process % self.mesh.size)
    ):
      raise ConfigError(
        f'eval batch size {batch_size} does not divide over '
        f'{jax.process_count()} process(es) of {self.mesh.size} devices'
      )
    image_sets.check_protocol(protocol)
    if protocol == 'multiscale' and not data_cfg.eval_scales:
      raise ConfigError('multi-scale evaluation needs data.eval_scales')
    self._data, self._split = data_cfg, split
    self._batch, self._protocol = per_process, protocol
    self._crops = steps.sharded_views_eval_step(self.mesh, model=model)
    self._probs = steps.sharded_view_probabilities(self.mesh, model=model)

  def __call__(self, state) -> dict:
    state = localise(self.mesh, state)
    if self._protocol == 'multiscale':
      totals = self._multiscale(state)
    else:
      totals = self._single_scale(state)
    return evaluator.eval_metrics(evaluator.process_sum(totals))

  def _single_scale(self, state):
    ds = image_sets.eval_dataset(
      self._data, self._split, self._batch, self._protocol
    )
    totals = None
    for batch in _to_mesh(self.mesh, ds.as_numpy_iterator()):
      sums = self._crops(state, *batch)
      totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return totals

  def _multiscale(self, state):
    """Softmax averaged over the sides and flips of each image (the
    paper's section 3.4), accumulated on the host by the image's index."""
    count, classes = image_sets.num_examples_and_classes(
      self._data, self._split
    )
    n = image_sets.shard_size(count)
    probs = np.zeros((n, len(classes)), np.float32)
    labels = np.zeros(n, np.int32)
    seen = np.zeros(n, np.int32)
    sharding = NamedSharding(self.mesh, P(steps.AXIS))
    for side in self._data.eval_scales:
      ds = image_sets.eval_dataset(
        self._data, self._split, self._batch, 'multiscale', side=side
      )
      # Only the views go to the devices; labels and indices wait here.
      batches = steps.prefetch(
        lambda b: (jax.device_put(b[0], sharding), *b[1:]),
        ds.as_numpy_iterator(),
      )
      for views, y, mask, index in batches:
        real = mask > 0
        probs[index[real]] += np.asarray(self._probs(state, views))[real]
        labels[index[real]] = y[real]
        seen[index[real]] += 1
    # Each image at every side, or (a corrupt file) at none.
    scales = len(self._data.eval_scales)
    if not np.isin(seen, (0, scales)).all():
      raise RuntimeError('multi-scale evaluation missed or repeated images')
    probs /= scales
    sums = steps.probability_sums(probs, labels, seen == scales)
    return jax.device_get(sums)
