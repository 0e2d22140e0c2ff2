"""ImageNet-style input on the CPU: an image folder or a tfds dataset
(imagenet2012, or any image classification dataset for fine-tuning), one
tf.data pipeline, each process reading its own shard.

An image folder is `ROOT/train/<class>/*.jpg` and `ROOT/val/<class>/*.jpg`;
the class index is the position of the folder name in sorted order, which
for ImageNet's wnids is the usual 0-999 labelling (tfds' too).
"""

import functools
import os

from absl import logging
import numpy as np

from resnet_jax.errors import ConfigError

JPEG_MAGIC = b'\xff\xd8\xff'
EXTENSIONS = ('.jpg', '.jpeg')
PROTOCOLS = ('center', 'ten_crop', 'multiscale')


def tensorflow_cpu():
  import tensorflow as tf  # only here: the GPU machines have no TF

  tf.config.set_visible_devices([], 'GPU')  # TF must not take accelerators
  return tf


@functools.lru_cache(maxsize=8)
def list_image_folder(root: str, split: str):
  """(paths, labels, class names) of ROOT/SPLIT/<class>/*.jpg.

  Files that are not JPEGs (by their first bytes, whatever their name) are
  skipped with a warning naming them; a class folder without images, or no
  class folders at all, is an error. Cached per (root, split): a run reads
  the folder (every file's first bytes) once, not again at each
  evaluation; the cached lists are shared, so callers must not change them.
  """
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise ConfigError(
      f'image folder {folder} not found: expected {root}/{split}/<class>/*.jpg'
    )
  classes = sorted(
    d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
  )
  if not classes:
    raise ConfigError(
      f'{folder} has no class folders (expected {folder}/<class>/*.jpg)'
    )
  paths, labels = [], []
  for label, name in enumerate(classes):
    found = 0
    class_dir = os.path.join(folder, name)
    for file in sorted(os.listdir(class_dir)):
      path = os.path.join(class_dir, file)
      if not file.lower().endswith(EXTENSIONS) or not os.path.isfile(path):
        continue
      with open(path, 'rb') as f:
        if f.read(3) != JPEG_MAGIC:
          logging.warning('skipping %s: not a JPEG file', path)
          continue
      paths.append(path)
      labels.append(label)
      found += 1
    if not found:
      raise ConfigError(f'class folder {class_dir} has no JPEG images')
  labels = np.asarray(labels, np.int32)
  labels.flags.writeable = False  # shared through the cache
  return paths, labels, classes


def folder_dataset(root: str, split: str):
  """(tf.data of (path, label), number of examples, class names); the
  files are read later, after sharding and skipping."""
  tf = tensorflow_cpu()
  paths, labels, classes = list_image_folder(root, split)
  return (
    tf.data.Dataset.from_tensor_slices((paths, labels)),
    len(paths),
    classes,
  )


def tfds_dataset(data_cfg, split: str):
  """tfds dataset data.name (imagenet2012 from the official archives in
  tfds' manual folder; others downloaded by tfds when first used), split
  'train' or 'val' read as data.train_split or data.val_split."""
  tf = tensorflow_cpu()
  import tensorflow_datasets as tfds

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
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ConfigError(
      f'tfds {name} has features {", ".join(features)}; an image '
      "classification dataset has 'image' and 'label'"
    )
  tfds_split = data_cfg.train_split if split == 'train' else data_cfg.val_split
  try:
    examples = builder.info.splits[tfds_split].num_examples
  except (KeyError, ValueError, AssertionError) as e:
    raise ConfigError(
      f'tfds {name} has no split {tfds_split!r} (its splits: '
      f'{", ".join(builder.info.splits)}; slices such as train[:90%] and '
      'train[90%:] hold out part of the training data)'
    ) from e
  ds = builder.as_dataset(
    split=tfds_split,
    shuffle_files=False,
    decoders={'image': tfds.decode.SkipDecoding()},
  )
  ds = ds.map(lambda x: (x['image'], tf.cast(x['label'], tf.int32)))
  return ds, examples, features['label'].names


def _prepare(builder, data_cfg):
  """Downloads and prepares a tfds dataset (ImageNet: from the manual
  folder, which must hold the official archives)."""
  import tensorflow_datasets as tfds

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


def read_jpeg(tf, data_cfg):
  """Folder sources yield paths, tfds sources bytes: bytes either way."""
  if data_cfg.image_folder:
    return lambda path, label: (tf.io.read_file(path), label)
  return lambda jpeg, label: (jpeg, label)


def source(data_cfg, split: str):
  """(tf.data of (jpeg bytes, label), examples, class names) for a split."""
  if data_cfg.image_folder:
    return folder_dataset(data_cfg.image_folder, split)
  return tfds_dataset(data_cfg, split)


def train_dataset(data_cfg, batch_size: int, seed: int, start_step: int = 0):
  """Endless training batches of this process: uint8 (B, 224, 224, 3) and
  int32 labels, `batch_size` per process.

  Epoch e is shuffled by (seed, e) and each example's crop and flip are
  seeded by its position in the stream, so starting at `start_step` skips
  exactly the examples an uninterrupted run consumed, without decoding
  them. (Exact for one process count; the file-level shuffle buffer keeps
  the order from depending on I/O timing.)
  """
  tf = tensorflow_cpu()
  from resnet_jax import imagenet_ops

  ds, _, _ = source(data_cfg, 'train')
  ds = ds.shard(_process_count(), _process_index())
  ds = ds.shuffle(
    data_cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True
  ).repeat()
  ds = ds.skip(start_step * batch_size)
  if data_cfg.train_crop not in ('scale', 'inception'):
    raise ConfigError(
      f'data.train_crop={data_cfg.train_crop!r} is not one of scale, inception'
    )
  size = data_cfg.image_size
  crop = {
    'scale': lambda j, s: imagenet_ops.scale_augment(
      j, s, *data_cfg.scale_range, size=size
    ),
    'inception': lambda j, s: imagenet_ops.inception_crop(j, s, size=size),
  }[data_cfg.train_crop]
  read = read_jpeg(tf, data_cfg)

  def preprocess(index, example):
    jpeg, label = read(*example)
    return crop(jpeg, tf.stack([tf.cast(seed, tf.int64), index])), label

  ds = ds.enumerate(start=start_step * batch_size)
  ds = ds.map(
    preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  # A corrupt JPEG is skipped, with TF's warning naming the error, rather
  # than crashing the run mid-epoch.
  ds = ds.ignore_errors(log_warning=True)
  ds = ds.batch(batch_size, drop_remainder=True)
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
  tf = tensorflow_cpu()
  from resnet_jax import imagenet_ops

  check_protocol(protocol)
  ds, _, _ = source(data_cfg, split)
  ds = ds.shard(_process_count(), _process_index())
  read = read_jpeg(tf, data_cfg)
  size = data_cfg.image_size
  if protocol != 'multiscale':  # 256 for 224 crops, in proportion otherwise
    side = round(size * imagenet_ops.TEN_CROP_SIDE / imagenet_ops.CROP)
  views = {
    'center': lambda j: imagenet_ops.center_crop(j, side, size)[None],
    'ten_crop': lambda j: imagenet_ops.ten_crops(j, side, size),
    'multiscale': lambda j: imagenet_ops.multiscale(j, side),
  }[protocol]

  def preprocess(index, example):
    jpeg, label = read(*example)
    return views(jpeg), label, tf.constant(1.0), tf.cast(index, tf.int32)

  ds = ds.enumerate().map(
    preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
  )
  # A corrupt JPEG cannot be scored: it is left out, with TF's warning
  # naming the error, and num_examples says how many were counted.
  ds = ds.ignore_errors(log_warning=True)
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
    padded = tuple(tf.pad(t, [[0, missing]]) for t in (labels, mask, index))
    return (
      (images, *padded) if protocol == 'multiscale' else (images, *padded[:2])
    )

  return ds.map(pad).prefetch(tf.data.AUTOTUNE)


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
