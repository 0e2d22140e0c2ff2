"""Evaluation: every example of a split counted exactly once, through one
interface for every kind of data and protocol.

`build(config, model, split)` gives the evaluator of a config: CIFAR's
arrays (held on the host, in padded and masked global batches over the
whole mesh) or an image set's val split under data.eval_protocol (one
centre crop, the paper's 10 crops or its multi-scale test). Either is
called as evaluator(state) -> dict(top1_accuracy, top5_accuracy,
top1_error, loss, num_examples), compiles once and is called again at
every evaluation of a run; training, the evaluate command and
fine-tuning all use it.
"""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from resnet_jax import parallel
from resnet_jax.config import data_names
from resnet_jax.data import cifar
from resnet_jax.data import image_sets
from resnet_jax.data import splits
from resnet_jax.errors import ConfigError
from resnet_jax.eval import eval_steps


def build(
  config,
  model,
  split: cifar.Split | None = None,
  name=None,
  mesh=None,
  test_set=None,
):
  """The evaluator of a config's data: for CIFAR, of `split` called
  `name` (default: data.eval_on's split, read now) on `mesh` (default:
  every device); for image sets, of val (or `test_set`, a
  data/imagenet_variants.TestSet) with data.eval_protocol, each process on its
  own devices. ConfigError before anything compiles."""
  batch = config.train.eval_batch_size
  if not data_names.is_cifar(config.data.name):
    if test_set is not None:
      test_set.check(config.data)
    return ImageSetEvaluator(
      config.data,
      model=model,
      batch_size=batch,
      protocol=config.data.eval_protocol,
      split=test_set or 'val',
    )
  if test_set is not None:
    raise ConfigError(
      f'--test_set={test_set.name} is a test set of ImageNet; a CIFAR run '
      'is tested on data.eval_on'
    )
  if split is None:
    split, name = cifar.load_eval(config.data)
  return ArrayEvaluator(split, name, model=model, batch_size=batch, mesh=mesh)


class ArrayEvaluator:
  """A split held as arrays (CIFAR): global batches padded and masked,
  split over the whole mesh."""

  def __init__(
    self, split: cifar.Split, name: str, *, model, batch_size, mesh=None
  ):
    self.name = name
    self.mesh = mesh or parallel.make_mesh()
    if batch_size % self.mesh.size:
      raise ConfigError(
        f'train.eval_batch_size={batch_size} does not divide over '
        f'{self.mesh.size} devices'
      )
    self._split, self._batch = split, batch_size
    self._step = eval_steps.sharded_eval_step(self.mesh, model=model)

  def __call__(self, state) -> dict:
    split, batch_size = self._split, self._batch
    per_process = batch_size // jax.process_count()
    me = jax.process_index()
    rows = slice(me * per_process, (me + 1) * per_process)
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
      batch = (images[rows], labels[rows], mask[rows])
      sums = self._step(state, *parallel.shard_batch(self.mesh, batch))
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


class ImageSetEvaluator:
  """An image set's split under `protocol` ('center', 'ten_crop',
  'multiscale'). Each process evaluates its own shard on its own devices
  and the sums are added across processes once, at the end: nothing in
  the loop is collective, so processes holding different numbers of
  images (50,000 over 3 hosts), or images of different shapes
  (multi-scale), never wait on each other."""

  def __init__(
    self, data_cfg, *, model, batch_size: int, protocol: str, split='val'
  ):
    """`split`: 'val', 'train', or a test set
    (data/imagenet_variants.TestSet)."""
    self.name = split if isinstance(split, str) else split.kind
    self.mesh = parallel.make_mesh(jax.local_devices())
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
    chosen = image_sets.eval_protocol(protocol)
    if chosen.whole_images and not data_cfg.eval_scales:
      raise ConfigError(f'data.eval_protocol={protocol} needs data.eval_scales')
    self._data, self._split = data_cfg, split
    self._batch, self._protocol = per_process, chosen
    self._crops = eval_steps.sharded_views_eval_step(self.mesh, model=model)
    self._probs = eval_steps.sharded_view_probabilities(self.mesh, model=model)

  def __call__(self, state) -> dict:
    state = parallel.localise(self.mesh, state)
    if self._protocol.whole_images:
      totals = self._multiscale(state)
    else:
      totals = self._single_scale(state)
    return eval_metrics(process_sum(totals))

  def _single_scale(self, state):
    ds = image_sets.eval_dataset(
      self._data, self._split, self._batch, self._protocol.name
    )
    totals = None
    sharding = NamedSharding(self.mesh, P(parallel.AXIS))
    batches = parallel.prefetch(
      lambda b: jax.device_put(b, sharding), ds.as_numpy_iterator()
    )
    for batch in batches:
      sums = self._crops(state, *batch)
      totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return totals

  def _multiscale(self, state):
    """Softmax averaged over the sides and flips of each image (the
    paper's section 3.4), accumulated on the host by the image's index."""
    count, _ = splits.source(self._data, self._split).size()
    n = image_sets.shard_size(count)
    probs = np.zeros((n, self._data.num_classes), np.float32)
    labels = None  # (n,) or, for label sets (ReaL), (n, K)
    seen = np.zeros(n, np.int32)
    sharding = NamedSharding(self.mesh, P(parallel.AXIS))
    for side in self._data.eval_scales:
      ds = image_sets.eval_dataset(
        self._data, self._split, self._batch, self._protocol.name, side=side
      )
      # Only the views go to the devices; labels and indices wait here.
      batches = parallel.prefetch(
        lambda b: (jax.device_put(b[0], sharding), *b[1:]),
        ds.as_numpy_iterator(),
      )
      for views, y, mask, index in batches:
        if labels is None:
          labels = np.zeros((n, *y.shape[1:]), np.int32)
        real = mask > 0
        probs[index[real]] += np.asarray(self._probs(state, views))[real]
        labels[index[real]] = y[real]
        seen[index[real]] += 1
    # Each image at every side, or (a corrupt file) at none.
    scales = len(self._data.eval_scales)
    if not np.isin(seen, (0, scales)).all():
      raise RuntimeError('multi-scale evaluation missed or repeated images')
    probs /= scales
    if labels is None:  # this process had no image
      labels = np.zeros(n, np.int32)
    sums = eval_steps.probability_sums(probs, labels, seen == scales)
    return jax.device_get(sums)
