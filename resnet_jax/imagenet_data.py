"""ImageNet-style input on the CPU: an image folder or tfds imagenet2012,
one tf.data pipeline, each process reading its own shard.

An image folder is `ROOT/train/<class>/*.jpg` and `ROOT/val/<class>/*.jpg`;
the class index is the position of the folder name in sorted order, which
for ImageNet's wnids is the usual 0-999 labelling (tfds' too).
"""

import os

from absl import logging
import numpy as np

from resnet_jax.errors import ConfigError

JPEG_MAGIC = b'\xff\xd8\xff'
EXTENSIONS = ('.jpg', '.jpeg')


def _tf():
  import tensorflow as tf  # only here: the GPU machines have no TF

  tf.config.set_visible_devices([], 'GPU')  # TF must not take accelerators
  return tf


def list_image_folder(root: str, split: str):
  """(paths, labels, class names) of ROOT/SPLIT/<class>/*.jpg.

  Files that are not JPEGs (by their first bytes, whatever their name) are
  skipped with a warning naming them; a class folder without images, or no
  class folders at all, is an error.
  """
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise ConfigError(f'image folder {folder} not found: expected '
                      f'{root}/{split}/<class>/*.jpg')
  classes = sorted(d for d in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, d)))
  if not classes:
    raise ConfigError(f'{folder} has no class folders (expected '
                      f'{folder}/<class>/*.jpg)')
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
  return paths, np.asarray(labels, np.int32), classes


def folder_dataset(root: str, split: str):
  """(tf.data of (jpeg bytes, label), number of examples, class names)."""
  tf = _tf()
  paths, labels, classes = list_image_folder(root, split)
  ds = tf.data.Dataset.from_tensor_slices((paths, labels))
  ds = ds.map(lambda p, y: (tf.io.read_file(p), y),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds, len(paths), classes


def tfds_dataset(data_cfg, split: str):
  """imagenet2012 from the official archives in tfds' manual folder."""
  tf = _tf()
  import tensorflow_datasets as tfds

  manual = data_cfg.manual_dir or os.path.join(
      data_cfg.tfds_data_dir or os.path.expanduser('~/tensorflow_datasets'),
      'downloads', 'manual')
  builder = tfds.builder('imagenet2012', data_dir=data_cfg.tfds_data_dir)
  prepared = tf.io.gfile.exists(
      os.path.join(builder.data_dir, 'dataset_info.json'))
  if not prepared:
    if not os.path.isdir(manual):
      raise ConfigError(
          f'imagenet2012 is not prepared in {builder.data_dir} and the '
          f'manual folder {manual} does not exist: put ILSVRC2012_img_train'
          '.tar and ILSVRC2012_img_val.tar there (tfds\' manual download), '
          'or use --config.data.image_folder=DIR')
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))
  name = 'validation' if split == 'val' else split
  ds = builder.as_dataset(split=name, shuffle_files=False,
                          decoders={'image': tfds.decode.SkipDecoding()})
  ds = ds.map(lambda x: (x['image'], tf.cast(x['label'], tf.int32)))
  return (ds, builder.info.splits[name].num_examples,
          builder.info.features['label'].names)


def source(data_cfg, split: str):
  """(tf.data of (jpeg bytes, label), examples, class names) for a split."""
  if data_cfg.image_folder:
    return folder_dataset(data_cfg.image_folder, split)
  return tfds_dataset(data_cfg, split)
