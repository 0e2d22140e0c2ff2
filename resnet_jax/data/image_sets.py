"""Image sets on the CPU: the tf.data pipelines of an image folder
(image_listing.py) or a tfds dataset (tfds_sources.py; imagenet2012, or
any image classification dataset for fine-tuning), each process reading
its own shard (the splits they read: splits.py), the evaluation
protocols, and the training mean.

The order of training examples. An image folder is read by index: every
epoch is a full permutation of its files seeded by (seed, epoch), split
over the processes by rows of the global batch (example_order.py). A tfds
dataset is read as records: each process reads its own even slice of the
split (tfds.split_for_jax_process), its files in an order shuffled anew
every epoch from the seed, then through a shuffle buffer of
data.shuffle_buffer records; tfds wrote the records of each file in a
shuffled order when it prepared the dataset.
"""

import dataclasses
from typing import Callable

import numpy as np

from resnet_jax.data import example_order
from resnet_jax.data import image_listing
from resnet_jax.data import splits
from resnet_jax.data import tf_cpu
from resnet_jax.data import tfds_sources
from resnet_jax.errors import ConfigError

AUTO_AUGMENTS = ('rand', 'trivial')  # data.auto_augment: auto_augment.py


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
  """An evaluation protocol (data.eval_protocol): the views of each image
  and how they are batched. `whole_images`: each image whole (and its
  flip) at every side of data.eval_scales, batched by shape and indexed
  so that its scores meet across sides (the paper's multi-scale test);
  else crops of data.image_size at one side."""

  name: str
  views: int  # per image, at one side
  whole_images: bool
  make: Callable  # (image_ops, jpeg, side, size) -> uint8 views


PROTOCOLS = {
  p.name: p
  for p in (
    EvalProtocol(
      'center',
      1,
      False,
      lambda ops, j, side, size: ops.center_crop(j, side, size)[None],
    ),
    EvalProtocol(
      'ten_crop',
      10,
      False,
      lambda ops, j, side, size: ops.ten_crops(j, side, size),
    ),
    EvalProtocol(
      'multiscale', 2, True, lambda ops, j, side, size: ops.multiscale(j, side)
    ),
  )
}


def read_jpeg(tf, paths: bool):
  """Folder sources yield paths, tfds sources bytes: bytes either way."""
  if paths:
    return lambda path, label: (tf.io.read_file(path), label)
  return lambda jpeg, label: (jpeg, label)


def as_written(tf, fn):
  """`fn` for tf.data's map as written: its control flow is TensorFlow's
  own (tf.cond, tf.switch_case, loops over Python ranges), so AutoGraph's
  rewrite of its Python source, which map applies to every function it
  reaches, changes nothing but costs seconds: a RandAugment training
  pipeline took 2.3-2.9 s to build with it, 0.7-1.0 s without
  (train_pipeline_build_s of `benchmark --input_only`, docs/benchmarks.md)."""
  return tf.autograph.experimental.do_not_convert(fn)


def if_image(tf, data, name, make, blank_shape):
  """(make(), True) if `data` is an encoded image, else a warning naming
  it and (zeros of blank_shape, False): the caller drops the example. A
  corrupt JPEG fails later, in decoding, and is dropped by ignore_errors
  with TensorFlow's warning."""
  import sys

  from resnet_jax.data import image_ops

  def skip():
    warn = tf.print(
      tf.strings.join(
        ['warning: skipping ', name, ' (not a JPEG, PNG, GIF or BMP image)']
      ),
      output_stream=sys.stderr,
    )
    with tf.control_dependencies([warn]):
      return tf.zeros(blank_shape, tf.uint8)

  ok = image_ops.is_image(data)
  return tf.cond(ok, make, skip), ok


def _process(process):
  """(index, count) of this process, or the one given (tests)."""
  if process is not None:
    return process
  return _process_index(), _process_count()


def _folder_examples(
  tf, listing: image_listing.Listing, seed, global_batch, process, start
):
  """(path, label, position) of this process's share of the permuted
  epochs (example_order), from step `start` on."""
  stream = example_order.process_stream(
    tf, len(listing), seed, global_batch, process, start
  )
  paths, labels = tf.constant(listing.paths), tf.constant(listing.labels)
  stream = stream.map(
    lambda index, where: (
      tf.gather(paths, index),
      tf.gather(labels, index),
      where,
    )
  )
  return stream.unbatch()


def _tfds_examples(tf, data_cfg, seed, global_batch, process, start):
  """(encoded image, label, position) of this process's slice of the
  tfds training split: its files reshuffled every epoch from the seed,
  its records through a seeded shuffle buffer; the first `start` steps'
  records skipped undecoded."""
  tfds = tf_cpu.datasets()

  builder = tfds_sources.builder_of(data_cfg)
  split, _ = tfds_sources.split_of(builder, data_cfg, 'train')
  index, count = process
  rows = global_batch // count
  ds = tfds_sources.records(
    builder,
    tfds.split_for_jax_process(split, process_index=index, process_count=count),
    shuffle_files=True,
    read_config=tfds.ReadConfig(
      shuffle_seed=seed, shuffle_reshuffle_each_iteration=True
    ),
  )
  ds = ds.shuffle(
    data_cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True
  ).repeat()
  ds = ds.skip(start * rows).enumerate(start=start * rows)

  def with_position(k, example):  # the k-th example of this process
    where = (k // rows) * global_batch + index * rows + k % rows
    return (*example, where)

  return ds.map(with_position)


def train_dataset(
  data_cfg,
  global_batch: int,
  seed: int,
  start_step: int = 0,
  *,
  listing: image_listing.Listing | None = None,
  process: tuple[int, int] | None = None,
):
  """Endless training batches of this process: uint8 (global_batch / P,
  size, size, 3) images and int32 labels.

  Each example's crop and flip are seeded by (seed, its position in the
  run's stream), so starting at `start_step` skips exactly the examples
  an uninterrupted run consumed, without decoding them, and the crops do
  not depend on the number of processes. `listing` (an image folder's
  files; default: listed now) and `process` ((index, count); default:
  JAX's) are for resumed runs and tests.
  """
  tf = tf_cpu.tensorflow()
  from resnet_jax.data import auto_augment
  from resnet_jax.data import image_ops

  process = _process(process)
  rows = global_batch // process[1]
  if data_cfg.image_folder:
    listing = listing or image_listing.list_image_folder(
      data_cfg.image_folder, 'train'
    )
    ds = _folder_examples(tf, listing, seed, global_batch, process, start_step)
    read, name = tf.io.read_file, lambda path, where: path
  else:
    ds = _tfds_examples(tf, data_cfg, seed, global_batch, process, start_step)
    read = lambda data: data  # noqa: E731
    name = lambda data, where: tf.strings.format(  # noqa: E731
      'the record at stream position {}', where
    )
  if data_cfg.train_crop not in ('scale', 'inception'):
    raise ConfigError(
      f'data.train_crop={data_cfg.train_crop!r} is not one of scale, inception'
    )
  size = data_cfg.image_size
  crop = {
    'scale': lambda j, s: image_ops.scale_augment(
      j, s, *data_cfg.scale_range, size=size
    ),
    'inception': lambda j, s: image_ops.inception_crop(j, s, size=size),
  }[data_cfg.train_crop]
  host_augment = auto_augment.for_config(data_cfg)
  if host_augment is not None:  # RandAugment etc. on the crop
    crop_only = crop

    def crop(jpeg, key):
      image = crop_only(jpeg, key)
      return host_augment(
        image, tf.random.experimental.stateless_fold_in(key, 1)
      )

  def preprocess(source, label, where):
    data = read(source)
    key = tf.stack([tf.cast(seed, tf.int64), where])
    image, ok = if_image(
      tf, data, name(source, where), lambda: crop(data, key), (size, size, 3)
    )
    return image, label, ok

  ds = ds.map(
    as_written(tf, preprocess),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  # A corrupt JPEG is skipped, with TF's warning naming the error, rather
  # than crashing the run mid-epoch.
  ds = ds.ignore_errors(log_warning=True)
  ds = ds.filter(lambda image, label, ok: ok).map(lambda i, y, ok: (i, y))
  ds = ds.batch(rows, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(
  data_cfg, split: str, batch_size: int, protocol: str, side: int | None = None
):
  """This process's evaluation batches, every example of its shard exactly
  once; the last batch is padded and its mask says so.

  'center' and 'ten_crop' yield (views, labels, mask) with views of shape
  (B, V, size, size, 3) uint8, V = 1 or 10. 'multiscale' yields (views,
  labels, mask, index) at shorter side `side`: each image whole, and its
  flip (V = 2), in batches of images of one shape (images keep their
  aspect ratios), so `index`, the example's position in this process's
  shard, says which scores belong together across sides.
  """
  tf = tf_cpu.tensorflow()
  from resnet_jax.data import image_ops

  chosen = eval_protocol(protocol)
  split_data = splits.source(data_cfg, split)
  ds, _, _ = split_data.records()
  ds = ds.shard(_process_count(), _process_index())
  paths = split_data.reads_paths
  read = read_jpeg(tf, paths)
  size = data_cfg.image_size
  if not chosen.whole_images:  # 256 for 224 crops, in proportion otherwise
    side = round(size * image_ops.TEN_CROP_SIDE / image_ops.CROP)
  blank = (
    chosen.views,
    *((side, side) if chosen.whole_images else (size,) * 2),
    3,
  )

  def views(jpeg):
    return chosen.make(image_ops, jpeg, side, size)

  def preprocess(index, example):
    jpeg, label = read(*example)
    name = (
      example[0]
      if paths
      else tf.strings.format('{} record {}', (str(split), index))
    )
    images, ok = if_image(tf, jpeg, name, lambda: views(jpeg), blank)
    return images, label, tf.cast(ok, tf.float32), tf.cast(index, tf.int32)

  ds = ds.enumerate().map(
    as_written(tf, preprocess),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  # A corrupt JPEG cannot be scored: it is left out, with TF's warning
  # naming the error, and num_examples says how many were counted.
  ds = ds.ignore_errors(log_warning=True).filter(lambda v, y, ok, i: ok > 0)
  if chosen.whole_images:  # a batch holds images of one shape
    ds = ds.group_by_window(
      key_func=lambda v, *_: tf.cast(
        tf.shape(v)[1] * 65536 + tf.shape(v)[2], tf.int64
      ),
      reduce_func=lambda _, window: window.batch(batch_size),
      window_size=batch_size,
    )
  else:
    ds = ds.batch(batch_size)

  def pad(images, labels, mask, index):
    missing = batch_size - tf.shape(labels)[0]
    images = tf.pad(images, [[0, missing], [0, 0], [0, 0], [0, 0], [0, 0]])
    padded = tuple(
      tf.pad(t, [[0, missing]] + [[0, 0]] * (len(t.shape) - 1))
      for t in (labels, mask, index)
    )
    return (images, *padded) if chosen.whole_images else (images, *padded[:2])

  return ds.map(pad).prefetch(tf.data.AUTOTUNE)


def mean_sums(
  data_cfg,
  seed: int,
  *,
  listing: image_listing.Listing | None = None,
  process: tuple[int, int] | None = None,
):
  """(int64 sum, count) of this process's share of the centre crops the
  training mean is taken from: data.mean_images images drawn at random
  over the whole training set (an image folder: example_order.mean_sample;
  tfds: the first records of the split, which tfds stored shuffled), the
  same images whatever the process count. Integer sums: adding the
  processes' shares gives the same bytes on every process."""
  tf = tf_cpu.tensorflow()
  from resnet_jax.data import image_ops

  index, count = _process(process)
  size = data_cfg.image_size
  side = round(size * image_ops.TEN_CROP_SIDE / image_ops.CROP)
  if data_cfg.image_folder:
    listing = listing or image_listing.list_image_folder(
      data_cfg.image_folder, 'train'
    )
    sample = example_order.mean_sample(len(listing), data_cfg.mean_images, seed)
    mine = sample[index::count]
    paths = [listing.paths[i] for i in mine]
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    ds = ds.map(lambda path: (tf.io.read_file(path), path))
  else:
    records, _, _ = tfds_sources.dataset(data_cfg, 'train')
    ds = records.take(data_cfg.mean_images).shard(count, index)
    ds = ds.enumerate().map(
      lambda i, example: (
        example[0],
        tf.strings.format('train record {}', i * count + index),
      )
    )

  def crop(data, name):
    return if_image(
      tf,
      data,
      name,
      lambda: image_ops.center_crop(data, side, size),
      (size, size, 3),
    )

  ds = ds.map(
    as_written(tf, crop),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  ds = ds.ignore_errors(log_warning=True).filter(lambda image, ok: ok)
  total, seen = np.zeros((size, size, 3), np.int64), 0
  for images, _ in ds.batch(64).prefetch(2).as_numpy_iterator():
    total += images.sum(axis=0, dtype=np.int64)
    seen += len(images)
  return total, seen


def eval_protocol(name: str) -> EvalProtocol:
  """The protocol data.eval_protocol names, or a ConfigError."""
  if name not in PROTOCOLS:
    raise ConfigError(
      f'data.eval_protocol={name!r} is not one of {", ".join(PROTOCOLS)}'
    )
  return PROTOCOLS[name]


def shard_size(num_examples: int) -> int:
  """Examples in this process's shard (Dataset.shard's round robin)."""
  return len(range(_process_index(), num_examples, _process_count()))


def _process_index():
  import jax

  return jax.process_index()


def _process_count():
  import jax

  return jax.process_count()
