"""What the training loop reads: CIFAR held on the device, or ImageNet-style
images (ImageNet, or any image folder or tfds dataset) streamed from the
host. Both offer the loop the same things: the
number of training images, the training mean, a compiled step that needs
only the state, and an evaluation.
"""

import os

import jax
import numpy as np

from resnet_jax.data import cifar
from resnet_jax.data import image_sets
from resnet_jax.errors import ConfigError
from resnet_jax.eval import evaluator
from resnet_jax.eval import image_evaluator
from resnet_jax.train import steps


class DeviceResident:
  """CIFAR: the training set lives on every device; the compiled step picks
  and augments its own batch from (seed, step)."""

  def __init__(self, config):
    self._config = config
    self.data = cifar.load(config.data)
    self.num_train = len(self.data.train)
    self.eval_name = self.data.eval_name
    self.classes = cifar.class_names(config.data)
    self._eval_fn = None

  def pixel_mean(self) -> np.ndarray:
    return cifar.pixel_mean(self.data.train.images)

  def save_listing(self, workdir: str) -> None:
    del workdir  # the data are whole files, read in full every run

  def train_fn(
    self, mesh, *, model, tx, lr_fn, start_step: int, bare: bool = False
  ):
    """fn(state, num_steps=1) -> (state, last metrics); each distinct
    num_steps compiles once."""
    del start_step, bare  # the batch is a function of the step in the state
    t = self._config.train
    data = steps.replicate(
      mesh, (self.data.train.images, self.data.train.labels)
    )
    compiled = {}

    def train(state, num_steps: int = 1):
      if num_steps not in compiled:
        compiled[num_steps] = steps.sharded_train_step(
          mesh,
          model=model,
          tx=tx,
          lr_fn=lr_fn,
          seed=t.seed,
          global_batch=t.batch_size,
          augment_images=self._config.data.augment,
          num_steps=num_steps,
          microbatches=t.microbatches,
        )
      return compiled[num_steps](state, *data)

    return train

  def evaluate(self, state, *, mesh, model) -> dict | None:
    if self.data.eval is None:
      return None
    if self._eval_fn is None:  # compiled once, reused at every evaluation
      self._eval_fn = steps.sharded_eval_step(mesh, model=model)
    return evaluator.evaluate(
      state,
      self.data.eval,
      mesh=mesh,
      model=model,
      batch_size=self._config.train.eval_batch_size,
      eval_fn=self._eval_fn,
    )


class Streaming:
  """ImageNet: tf.data decodes and augments on the CPU; uint8 batches go
  to the devices, two in flight, and are normalised there."""

  def __init__(self, config, workdir: str | None = None):
    self._config = config
    _check_data_config(config.data)  # first: cheaper than listing the data
    d = config.data
    # An image folder's training files: listed once, saved in the workdir
    # and reused when the run resumes.
    self.listing = (
      image_sets.training_listing(d.image_folder, workdir)
      if d.image_folder
      else None
    )
    if self.listing is not None and jax.process_count() > 1:
      _check_same_on_every_process(self.listing)
    self.num_train, self.classes = image_sets.num_examples_and_classes(
      d, 'train', self.listing
    )
    if len(self.classes) != d.num_classes:
      raise ConfigError(
        f'{len(self.classes)} classes in the training data but '
        f'data.num_classes={d.num_classes}'
      )
    self.eval_name = d.eval_on
    self._evaluator = None

  def save_listing(self, workdir: str) -> None:
    """WORKDIR/train_files.txt.gz: the files this run trains on."""
    path = os.path.join(workdir, image_sets.LISTING)
    if self.listing is not None and not os.path.exists(path):
      self.listing.save(path)

  def pixel_mean(self) -> np.ndarray:
    """Mean of the centre crops of data.mean_images training images drawn
    at random over the whole set: per pixel (the paper) or per channel.
    Each process crops its share of the same sample; the integer sums are
    added over the processes, so every process gets the same bytes."""
    d = self._config.data
    if d.mean not in ('pixel', 'channel'):
      raise ConfigError(f'data.mean={d.mean!r} is not one of pixel, channel')
    total, count = image_sets.mean_sums(
      d, self._config.train.seed, listing=self.listing
    )
    total, count = _exact_process_sum(total, count)
    if not count:
      raise ConfigError("no readable image among the mean's sample")
    mean = (total / count).astype(np.float32)
    if d.mean == 'channel':
      return mean.mean(axis=(0, 1), keepdims=True)
    return mean

  def train_fn(
    self, mesh, *, model, tx, lr_fn, start_step: int, bare: bool = False
  ):
    """bare=True feeds the first batch again and again: the step without
    the host pipeline, the reference the benchmark holds the loop to."""
    t = self._config.train
    batches = image_sets.train_dataset(
      self._config.data,
      t.batch_size,
      seed=t.seed,
      start_step=start_step,
      listing=self.listing,
    )
    on_device = prefetch_to_mesh(mesh, batches.as_numpy_iterator())
    step = steps.sharded_batch_train_step(
      mesh,
      model=model,
      tx=tx,
      lr_fn=lr_fn,
      seed=t.seed,
      lighting_std=self._config.data.lighting_std,
      microbatches=t.microbatches,
    )
    if bare:
      first = next(on_device)
      return lambda state, num_steps=1: step(state, *first)
    return lambda state, num_steps=1: step(state, *next(on_device))

  def evaluate(self, state, *, mesh, model) -> dict | None:
    """data.eval_protocol on the validation split; each process on its
    own devices (see imagenet_eval)."""
    del mesh
    if self.eval_name == 'none':
      return None
    if self._evaluator is None:  # compiled once, reused at every evaluation
      self._evaluator = image_evaluator.Evaluator(
        self._config.data,
        model=model,
        batch_size=self._config.train.eval_batch_size,
        protocol=self._config.data.eval_protocol,
      )
    return self._evaluator(state)


class Synthetic:
  """Random uint8 images and labels, made once and fed again and again: the
  compiled step with no input pipeline at all, for benchmarks on machines
  without TensorFlow (the lent GPUs) or the data. No evaluation."""

  # Training-set sizes, so that durations in epochs convert as with the
  # real data.
  NUM_TRAIN = {'cifar10': 50_000, 'cifar100': 50_000, 'imagenet2012': 1_281_167}

  def __init__(self, config):
    self._config = config
    if config.data.name not in self.NUM_TRAIN:
      raise ConfigError(
        f'data.name={config.data.name!r} is not one of '
        + ', '.join(self.NUM_TRAIN)
      )
    self.num_train = self.NUM_TRAIN[config.data.name]
    self.eval_name = 'none'
    self.classes = None

  def save_listing(self, workdir: str) -> None:
    del workdir  # nothing is read

  def pixel_mean(self) -> np.ndarray:
    size = self._config.data.image_size
    return np.full((size, size, 3), 127.5, np.float32)

  def train_fn(
    self, mesh, *, model, tx, lr_fn, start_step: int, bare: bool = False
  ):
    del start_step, bare  # the same batch at every step
    t, d = self._config.train, self._config.data
    rng = np.random.default_rng(t.seed + jax.process_index())
    rows = t.batch_size // jax.process_count()
    batch = steps.shard_batch(
      mesh,
      (
        rng.integers(0, 256, (rows, d.image_size, d.image_size, 3), np.uint8),
        rng.integers(0, d.num_classes, rows, np.int32),
      ),
    )
    step = steps.sharded_batch_train_step(
      mesh,
      model=model,
      tx=tx,
      lr_fn=lr_fn,
      seed=t.seed,
      microbatches=t.microbatches,
    )
    return lambda state, num_steps=1: step(state, *batch)

  def evaluate(self, state, *, mesh, model) -> None:
    del state, mesh, model


def _check_data_config(d):
  """The ImageNet data keys whose values can be wrong on their own."""
  if d.eval_on not in ('val', 'none'):
    raise ConfigError(f'data.eval_on={d.eval_on!r} is not one of val, none')
  image_sets.check_protocol(d.eval_protocol)
  if d.train_crop not in ('scale', 'inception'):
    raise ConfigError(
      f'data.train_crop={d.train_crop!r} is not one of scale, inception'
    )
  low, high = d.scale_range  # in their range: config_ranges
  if d.train_crop == 'scale' and d.image_size > low:
    raise ConfigError(
      f'data.image_size={d.image_size} is larger than the shortest side '
      f'the scale augmentation resizes to (data.scale_range={low}..'
      f'{high}): the crop would not fit; raise data.scale_range'
    )


def _check_same_on_every_process(listing):
  """Refuses a job whose processes list different training files (an
  NFS cache that lags behind on one host): their shards would overlap."""
  from jax.experimental import multihost_utils

  digest = np.frombuffer(listing.fingerprint()[:16], np.int32)
  every = np.asarray(multihost_utils.process_allgather(digest))
  if not (every == every[0]).all():
    raise ConfigError(
      f'the processes list different files in {listing.root}/train: is '
      'the folder the same (and complete) on every host?'
    )


def _exact_process_sum(total: np.ndarray, count: int):
  """Integer sums added over the processes, exactly."""
  if jax.process_count() == 1:
    return total, count
  from jax.experimental import multihost_utils

  if total.max(initial=0) >= 2**31:
    raise ConfigError('data.mean_images is too large for exact sums')
  parts = multihost_utils.process_allgather(
    (total.astype(np.int32), np.int32(count))
  )
  return (
    np.asarray(parts[0]).sum(axis=0, dtype=np.int64),
    int(np.asarray(parts[1]).sum()),
  )


def prefetch_to_mesh(mesh, host_batches):
  """Host batches -> batches split over the mesh, two already sent while
  the current step runs, so the devices never wait on a copy."""
  return steps.prefetch(lambda b: steps.shard_batch(mesh, b), host_batches)


def for_config(config, workdir: str | None = None):
  """The input a config asks for: CIFAR on the device, anything else (an
  image folder, tfds imagenet2012 or another tfds dataset) streamed."""
  if cifar.is_cifar(config.data.name):
    return DeviceResident(config)
  if not config.data.image_folder and not config.data.name:
    raise ConfigError(
      'no data: set data.image_folder=DIR (DIR/train/<class>/*.jpg) or '
      'data.name to a tfds dataset'
    )
  return Streaming(config, workdir)
