"""Image sets on the CPU: an image folder or a tfds dataset
(imagenet2012, or any image classification dataset for fine-tuning), one
tf.data pipeline, each process reading its own shard.

An image folder is `ROOT/train/<class>/*.jpg` and `ROOT/val/<class>/*.jpg`;
the class index is the position of the folder name in sorted order, which
for ImageNet's wnids is the usual 0-999 labelling (tfds' too).

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
import functools
import gzip
import hashlib
import json
import os

from absl import logging
import numpy as np

from resnet_jax.data import example_order
from resnet_jax.data import tf_cpu
from resnet_jax.errors import ConfigError

EXTENSIONS = ('.jpg', '.jpeg', '.png')
PROTOCOLS = ('center', 'ten_crop', 'multiscale')
AUTO_AUGMENTS = ('rand', 'trivial')  # data.auto_augment: auto_augment.py


@dataclasses.dataclass(frozen=True, eq=False)
class Listing:
  """The files of ROOT/SPLIT: `files` are 'class/name' paths relative to
  ROOT/SPLIT, `labels` their class indices, `classes` the sorted names."""

  root: str
  split: str
  files: tuple[str, ...]
  labels: np.ndarray  # int32, read-only
  classes: tuple[str, ...]

  def __len__(self):
    return len(self.files)

  @property
  def paths(self) -> list[str]:
    folder = os.path.join(self.root, self.split)
    return [f'{folder}/{f}' for f in self.files]

  def fingerprint(self) -> bytes:
    """A digest of the file names and classes, to check that every
    process of a job lists the same files."""
    digest = hashlib.sha256('\n'.join(self.classes).encode())
    digest.update('\n'.join(self.files).encode())
    return digest.digest()

  def save(self, path: str) -> None:
    """The classes, then one file per line; written whole, then renamed."""
    tmp = f'{path}.tmp{os.getpid()}'
    with gzip.open(tmp, 'wt', compresslevel=1) as f:
      f.write(json.dumps({'classes': list(self.classes)}) + '\n')
      f.write('\n'.join(self.files) + '\n')
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str, root: str, split: str = 'train') -> 'Listing':
    try:
      with gzip.open(path, 'rt') as f:
        classes = tuple(json.loads(f.readline())['classes'])
        files = tuple(f.read().splitlines())
    except (OSError, ValueError, KeyError, EOFError) as e:
      raise ConfigError(
        f'{path} is unreadable ({e}); move it away to list '
        f'{os.path.join(root, split)} afresh'
      ) from e
    index = {name: i for i, name in enumerate(classes)}
    labels = np.fromiter(
      (index[f.partition('/')[0]] for f in files), np.int32, len(files)
    )
    labels.flags.writeable = False
    return cls(root, split, files, labels, classes)


@functools.lru_cache(maxsize=8)
def list_image_folder(root: str, split: str) -> Listing:
  """The image files of ROOT/SPLIT/<class>/, by name alone (.jpg, .jpeg,
  .png, any case): nothing is opened, so listing ImageNet's 1.28M files
  costs seconds even on a network file system. A file that turns out not
  to be an image is skipped, with a warning naming it, when it is read.
  A class folder without images, or no class folders at all, is an error.
  Cached per (root, split): a run lists a folder once, not again at each
  evaluation; the cached listing is shared and must not be changed.
  """
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise ConfigError(
      f'image folder {folder} not found: expected {root}/{split}/<class>/*.jpg'
    )
  with os.scandir(folder) as entries:
    classes = sorted(e.name for e in entries if e.is_dir())
  if not classes:
    raise ConfigError(
      f'{folder} has no class folders (expected {folder}/<class>/*.jpg)'
    )
  files, counts = [], []
  for name in classes:
    with os.scandir(os.path.join(folder, name)) as entries:
      found = sorted(
        e.name
        for e in entries
        if e.name.lower().endswith(EXTENSIONS) and e.is_file()
      )
    if not found:
      raise ConfigError(
        f'class folder {os.path.join(folder, name)} has no JPEG images'
      )
    files.extend(f'{name}/{f}' for f in found)
    counts.append(len(found))
  labels = np.repeat(np.arange(len(classes), dtype=np.int32), counts)
  labels.flags.writeable = False  # shared through the cache
  return Listing(root, split, tuple(files), labels, tuple(classes))


def training_listing(root: str, saved: str | None) -> Listing:
  """A run's training files: those in `saved` (the list the run wrote when
  it started, so a resumed run reads the same files in the same order,
  whatever was added to or removed from the folder since) if it exists,
  else ROOT/train listed afresh."""
  if saved and os.path.exists(saved):
    logging.info('training files: the list saved in %s', saved)
    return Listing.load(saved, root)
  return list_image_folder(root, 'train')


def folder_dataset(root: str, split: str):
  """(tf.data of (path, label), number of examples, class names); the
  files are read later, after sharding and skipping."""
  tf = tf_cpu.tensorflow()
  listing = list_image_folder(root, split)
  return (
    tf.data.Dataset.from_tensor_slices((listing.paths, listing.labels)),
    len(listing),
    list(listing.classes),
  )


def tfds_builder(data_cfg, features=('image', 'label')):
  """tfds dataset data.name, prepared (imagenet2012 from the official
  archives in tfds' manual folder; others downloaded by tfds when first
  used), and checked to have `features` (an image classification
  dataset's)."""
  tf = tf_cpu.tensorflow()
  tfds = tf_cpu.datasets()

  name = data_cfg.name
  try:
    builder = tfds.builder(name, data_dir=data_cfg.tfds_data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(
      f'data.name={name!r} is neither a tfds dataset nor prepared in '
      f'{data_cfg.tfds_data_dir or "$TFDS_DATA_DIR"}; or set '
      'data.image_folder=DIR'
    ) from e
  if not tf.io.gfile.exists(
    os.path.join(builder.data_dir, 'dataset_info.json')
  ):
    _prepare(builder, data_cfg)
  has = builder.info.features
  if any(f not in has for f in features):
    raise ConfigError(
      f'tfds {name} has features {", ".join(has)}; expected '
      + ', '.join(features)
    )
  return builder


def _tfds_split(builder, data_cfg, split: str) -> tuple[str, int]:
  """(tfds split name, its number of examples) for 'train' or 'val'."""
  tfds_split = data_cfg.train_split if split == 'train' else data_cfg.val_split
  try:
    return tfds_split, builder.info.splits[tfds_split].num_examples
  except (KeyError, ValueError, AssertionError) as e:
    raise ConfigError(
      f'tfds {data_cfg.name} has no split {tfds_split!r} (its splits: '
      f'{", ".join(builder.info.splits)}; slices such as train[:90%] and '
      'train[90%:] hold out part of the training data)'
    ) from e


def tfds_records(builder, split: str, label: str = 'label', **kwargs):
  """(encoded image, int32 label) records of a tfds split, undecoded;
  the label from feature `label`."""
  tf = tf_cpu.tensorflow()
  tfds = tf_cpu.datasets()

  ds = builder.as_dataset(
    split=split, decoders={'image': tfds.decode.SkipDecoding()}, **kwargs
  )
  return ds.map(lambda x: (x['image'], tf.cast(x[label], tf.int32)))


def tfds_dataset(data_cfg, split: str):
  """(tf.data of (encoded image, label) in the order stored, examples,
  class names) of tfds dataset data.name; split 'train' or 'val' read as
  data.train_split or data.val_split."""
  builder = tfds_builder(data_cfg)
  tfds_split, examples = _tfds_split(builder, data_cfg, split)
  ds = tfds_records(builder, tfds_split, shuffle_files=False)
  return ds, examples, builder.info.features['label'].names


def _prepare(builder, data_cfg):
  """Downloads and prepares a tfds dataset (ImageNet: from the manual
  folder, which must hold the official archives)."""
  tfds = tf_cpu.datasets()

  manual = data_cfg.manual_dir or os.path.join(
    data_cfg.tfds_data_dir or os.path.expanduser('~/tensorflow_datasets'),
    'downloads',
    'manual',
  )
  if data_cfg.name == 'imagenet2012' and not os.path.isdir(manual):
    raise ConfigError(
      f'imagenet2012 is not prepared in {builder.data_dir} and the '
      f'manual folder {manual} does not exist: put ILSVRC2012_img_train'
      ".tar and ILSVRC2012_img_val.tar there (tfds' manual download), "
      'or use --config.data.image_folder=DIR'
    )
  try:
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual)
    )
  except Exception as e:  # offline: errors surface deep inside tfds
    first = (str(e).strip().splitlines() or [''])[0][:200]
    raise ConfigError(
      f'could not prepare tfds {data_cfg.name} in {builder.data_dir} '
      f'({type(e).__name__}: {first}); prepare it on a networked machine '
      'and set data.tfds_data_dir, or use data.image_folder=DIR'
    ) from e


def read_jpeg(tf, paths: bool):
  """Folder sources yield paths, tfds sources bytes: bytes either way."""
  if paths:
    return lambda path, label: (tf.io.read_file(path), label)
  return lambda jpeg, label: (jpeg, label)


def source(data_cfg, split):
  """(tf.data of (path or encoded image, label), examples, class names)
  of a split in its stored order, for evaluation: 'train' or 'val' of the
  run's data, or a test set (data/imagenet_variants.py; no class names)."""
  if not isinstance(split, str):
    return split.source(data_cfg)
  if data_cfg.image_folder:
    return folder_dataset(data_cfg.image_folder, split)
  return tfds_dataset(data_cfg, split)


def reads_paths(data_cfg, split) -> bool:
  """Whether source() yields file paths (else encoded images)."""
  if not isinstance(split, str):
    return split.reads_paths
  return bool(data_cfg.image_folder)


def num_examples_and_classes(data_cfg, split, listing=None):
  """(examples, class names) of a split, reading no image (a test set:
  its examples and no names)."""
  if not isinstance(split, str):
    return split.source(data_cfg)[1], None
  if data_cfg.image_folder:
    listing = listing or list_image_folder(data_cfg.image_folder, split)
    return len(listing), list(listing.classes)
  builder = tfds_builder(data_cfg)
  _, examples = _tfds_split(builder, data_cfg, split)
  return examples, builder.info.features['label'].names


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


def _folder_examples(tf, listing: Listing, seed, global_batch, process, start):
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

  builder = tfds_builder(data_cfg)
  split, _ = _tfds_split(builder, data_cfg, 'train')
  index, count = process
  rows = global_batch // count
  ds = tfds_records(
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
  listing: Listing | None = None,
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
    listing = listing or list_image_folder(data_cfg.image_folder, 'train')
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
    preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
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

  check_protocol(protocol)
  ds, _, _ = source(data_cfg, split)
  ds = ds.shard(_process_count(), _process_index())
  paths = reads_paths(data_cfg, split)
  read = read_jpeg(tf, paths)
  size = data_cfg.image_size
  if protocol != 'multiscale':  # 256 for 224 crops, in proportion otherwise
    side = round(size * image_ops.TEN_CROP_SIDE / image_ops.CROP)
  views, blank = {
    'center': (
      lambda j: image_ops.center_crop(j, side, size)[None],
      (1, size, size, 3),
    ),
    'ten_crop': (
      lambda j: image_ops.ten_crops(j, side, size),
      (10, size, size, 3),
    ),
    'multiscale': (
      lambda j: image_ops.multiscale(j, side),
      (2, side, side, 3),
    ),
  }[protocol]

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
    preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  # A corrupt JPEG cannot be scored: it is left out, with TF's warning
  # naming the error, and num_examples says how many were counted.
  ds = ds.ignore_errors(log_warning=True).filter(lambda v, y, ok, i: ok > 0)
  if protocol == 'multiscale':  # a batch holds images of one shape
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
    return (
      (images, *padded) if protocol == 'multiscale' else (images, *padded[:2])
    )

  return ds.map(pad).prefetch(tf.data.AUTOTUNE)


def mean_sums(
  data_cfg,
  seed: int,
  *,
  listing: Listing | None = None,
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
    listing = listing or list_image_folder(data_cfg.image_folder, 'train')
    sample = example_order.mean_sample(len(listing), data_cfg.mean_images, seed)
    mine = sample[index::count]
    paths = [listing.paths[i] for i in mine]
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    ds = ds.map(lambda path: (tf.io.read_file(path), path))
  else:
    records, _, _ = tfds_dataset(data_cfg, 'train')
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

  ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors(log_warning=True).filter(lambda image, ok: ok)
  total, seen = np.zeros((size, size, 3), np.int64), 0
  for images, _ in ds.batch(64).prefetch(2).as_numpy_iterator():
    total += images.sum(axis=0, dtype=np.int64)
    seen += len(images)
  return total, seen


def check_protocol(protocol: str):
  if protocol not in PROTOCOLS:
    raise ConfigError(
      f'data.eval_protocol={protocol!r} is not one of {", ".join(PROTOCOLS)}'
    )


def shard_size(num_examples: int) -> int:
  """Examples in this process's shard (Dataset.shard's round robin)."""
  return len(range(_process_index(), num_examples, _process_count()))


def _process_index():
  import jax

  return jax.process_index()


def _process_count():
  import jax

  return jax.process_count()
