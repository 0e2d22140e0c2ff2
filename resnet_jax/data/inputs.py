"""What the training loop reads: the data contract.

An input says what kind of data it is and yields it:
- `kind == 'device'` (CIFAR): `arrays`, the whole training set, which
  lives on every device; the compiled step picks its own batch from
  (seed, step) (augment.py).
- `kind == 'host'` (image sets, synthetic batches): `batches(start_step)`,
  this process's uint8 batches, streamed from the host.
Both give `num_train`, `classes` (or None), `pixel_mean()` (the training
mean), `eval_name` and, for arrays, `eval_split` (what the evaluator
reads), and `save_listing(workdir)` (what a resumed run must read again).
The loop compiles the step for the kind (train/loop.py); the input never
sees the model.
"""

import itertools
import os

import jax
import numpy as np

from resnet_jax.config import data_names
from resnet_jax.data import cifar
from resnet_jax.data import image_listing
from resnet_jax.data import image_sets
from resnet_jax.data import splits
from resnet_jax.errors import ConfigError
from resnet_jax.run import layout


class DeviceResident:
  """CIFAR: the training set lives on every device (`arrays`); the
  compiled step picks and augments its own batch from (seed, step)."""

  kind = 'device'

  def __init__(self, config):
    self._config = config
    self.data = cifar.load(config.data)
    self.num_train = len(self.data.train)
    self.eval_name = self.data.eval_name
    self.eval_split = self.data.eval
    self.classes = cifar.class_names(config.data)

  @property
  def arrays(self):
    """(images, labels) of the whole training set, uint8 and int32."""
    return self.data.train.images, self.data.train.labels

  def pixel_mean(self) -> np.ndarray:
    return cifar.pixel_mean(self.data.train.images)

  def save_listing(self, workdir: str) -> None:
    del workdir  # the data are whole files, read in full every run


class Streaming:
  """Image sets (ImageNet, any image folder or tfds dataset): tf.data
  decodes and augments on the CPU and `batches` yields this process's
  uint8 batches, normalised (and lit) on the device by the step."""

  kind = 'host'
  eval_split = None  # the val split is read by the evaluator

  def __init__(self, config, workdir: str | None = None):
    self._config = config
    _check_data_config(config.data)  # first: cheaper than listing the data
    d = config.data
    # An image folder's training files: listed once, saved in the workdir
    # and reused when the run resumes.
    self.listing = (
      image_listing.training_listing(
        d.image_folder, workdir and layout.path(workdir, layout.TRAIN_FILES)
      )
      if d.image_folder
      else None
    )
    if self.listing is not None and jax.process_count() > 1:
      _check_same_on_every_process(self.listing)
    self.num_train, self.classes = splits.source(
      d, 'train', self.listing
    ).size()
    if len(self.classes) != d.num_classes:
      raise ConfigError(
        f'{len(self.classes)} classes in the training data but '
        f'data.num_classes={d.num_classes}'
      )
    self.eval_name = d.eval_on
    self.lighting_std = d.lighting_std  # added on the device, by the step

  def save_listing(self, workdir: str) -> None:
    """WORKDIR/train_files.txt.gz: the files this run trains on."""
    path = layout.path(workdir, layout.TRAIN_FILES)
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

  def batches(self, start_step: int = 0):
    """This process's training batches from `start_step` on: (uint8
    images, int32 labels), batch_size / P rows each."""
    t = self._config.train
    return image_sets.train_dataset(
      self._config.data,
      t.batch_size,
      seed=t.seed,
      start_step=start_step,
      listing=self.listing,
    ).as_numpy_iterator()


class Synthetic:
  """Random uint8 images and labels, made once and fed again and again: the
  compiled step with no input pipeline at all, for benchmarks on machines
  without TensorFlow (the lent GPUs) or the data. No evaluation."""

  kind = 'host'
  eval_split = None
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
    self.lighting_std = 0.0

  def save_listing(self, workdir: str) -> None:
    del workdir  # nothing is read

  def pixel_mean(self) -> np.ndarray:
    size = self._config.data.image_size
    return np.full((size, size, 3), 127.5, np.float32)

  def batches(self, start_step: int = 0):
    del start_step  # the same batch at every step
    t, d = self._config.train, self._config.data
    rng = np.random.default_rng(t.seed + jax.process_index())
    rows = t.batch_size // jax.process_count()
    shape = (rows, d.image_size, d.image_size, 3)
    batch = (
      rng.integers(0, 256, shape, np.uint8),
      rng.integers(0, d.num_classes, rows, np.int32),
    )
    return itertools.repeat(batch)


def _check_data_config(d):
  """The ImageNet data keys whose values can be wrong on their own."""
  if d.eval_on not in ('val', 'none'):
    raise ConfigError(f'data.eval_on={d.eval_on!r} is not one of val, none')
  image_sets.eval_protocol(d.eval_protocol)
  if d.auto_augment not in (None, *image_sets.AUTO_AUGMENTS):
    raise ConfigError(
      f'data.auto_augment={d.auto_augment!r} is not one of None, '
      + ', '.join(image_sets.AUTO_AUGMENTS)
    )
  if d.train_crop not in ('scale', 'inception'):
    raise ConfigError(
      f'data.train_crop={d.train_crop!r} is not one of scale, inception'
    )
  low, high = d.scale_range  # in their range: config/keys.py
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


def for_config(config, workdir: str | None = None):
  """The input a config asks for: CIFAR on the device, anything else (an
  image folder, tfds imagenet2012 or another tfds dataset) streamed."""
  if data_names.is_cifar(config.data.name):
    return DeviceResident(config)
  if not config.data.image_folder and not config.data.name:
    raise ConfigError(
      'no data: set data.image_folder=DIR (DIR/train/<class>/*.jpg) or '
      'data.name to a tfds dataset'
    )
  return Streaming(config, workdir)
