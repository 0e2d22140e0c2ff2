"""Other test sets for ImageNet runs: ImageNet-V2 (Recht et al. 2019) and
the ReaL labels of ImageNet's validation images (Beyer et al. 2020), as
tensorflow-datasets provides them or from files in their released layout.

- ImageNet-V2: tfds `imagenet_v2` (its 'matched-frequency' variant;
  `imagenet_v2/threshold-0.7` or `imagenet_v2/topimages` for the others),
  or a folder as the release unpacks: DIR/<class index 0-999>/*.jpeg,
  the folder name being the class's index in the usual (sorted wnid)
  order, not a wnid.
- ReaL: tfds `imagenet2012_real` (validation split), or the release's
  `real.json` (one list of labels per validation image, in the order of
  ILSVRC2012_val_00000001.JPEG ...) with the run's image folder's val/
  images. An image is counted correct when its top-1 class is one of its
  labels; the images ReaL gives no label are left out (as the paper does).

Each yields (path or encoded image, label) like the run's own val split;
a ReaL label is the set of labels, padded with -1.
"""

import dataclasses
import functools
import json
import os
import re

import numpy as np

from resnet_jax.data import image_listing
from resnet_jax.data import tf_cpu
from resnet_jax.data import tfds_sources
from resnet_jax.errors import ConfigError

NAMES = ('imagenet_v2', 'real')
# tfds imagenet_v2's variants (builder configs), the first its default.
V2_VARIANTS = ('matched-frequency', 'threshold-0.7', 'topimages')
_VAL_NUMBER = re.compile(r'ILSVRC2012_val_(\d{8})\.', re.IGNORECASE)


@functools.lru_cache(maxsize=4)
def _real_json(path: str) -> list:
  try:
    with open(path) as f:
      real = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f'--test_data={path} is not a readable real.json ({e})')
  if not isinstance(real, list):
    raise ConfigError(f'{path}: expected a list of label lists (real.json)')
  return real


@dataclasses.dataclass(frozen=True)
class TestSet:
  """`name` (imagenet_v2[/variant] or real), read from `path` (a folder
  for ImageNet-V2, real.json for ReaL) or, without one, from tfds."""

  name: str
  path: str | None = None

  @property
  def label_sets(self) -> bool:
    return self.kind == 'real'

  @property
  def reads_paths(self) -> bool:
    """Files (with `path`) are read by path, tfds records as bytes."""
    return self.path is not None

  @property
  def kind(self) -> str:
    return self.name.partition('/')[0]

  def check(self, data_cfg) -> None:
    """ConfigError before anything is read or compiled."""
    if self.kind not in NAMES:
      raise ConfigError(
        f'--test_set={self.name!r} is not one of {", ".join(NAMES)}'
      )
    variant = self.name.partition('/')[2]
    if self.kind == 'imagenet_v2' and variant and variant not in V2_VARIANTS:
      raise ConfigError(
        f'--test_set={self.name!r}: tfds imagenet_v2 has the variants '
        + ', '.join(V2_VARIANTS)
      )
    if self.path is not None and not os.path.exists(self.path):
      raise ConfigError(f'--test_data={self.path}: no such file or folder')
    if self.kind == 'real' and self.path and not data_cfg.image_folder:
      raise ConfigError(
        "ReaL's real.json labels the val/ images of an image folder: set "
        '--config.data.image_folder=DIR (DIR/val/<wnid>/ILSVRC2012_val_'
        '*.JPEG), or leave out --test_data to read tfds imagenet2012_real'
      )
    if self.path is None:
      return  # tfds' sets hold ImageNet's classes
    if self.kind == 'imagenet_v2':
      labels = numbered_folder(self.path).labels
    else:
      listing = image_listing.list_image_folder(data_cfg.image_folder, 'val')
      labels = real_label_sets(self.path, listing.files)
    if labels.size and labels.max() >= data_cfg.num_classes:
      raise ConfigError(
        f'--test_data={self.path} holds class {labels.max()}; this run '
        f'has data.num_classes={data_cfg.num_classes}'
      )

  def source(self, data_cfg):
    """(tf.data of (path or encoded image, label), examples, None: the
    classes are the run's)."""
    if self.kind == 'imagenet_v2':
      return self._imagenet_v2(data_cfg)
    return self._real(data_cfg)

  def _imagenet_v2(self, data_cfg):
    tf = tf_cpu.tensorflow()
    if self.path:
      listing = numbered_folder(self.path)
      ds = tf.data.Dataset.from_tensor_slices((listing.paths, listing.labels))
      return ds, len(listing), None
    tfds_cfg = _tfds_config(data_cfg, self.name, 'test')
    ds, examples, _ = tfds_sources.dataset(tfds_cfg, 'val')
    return ds, examples, None

  def _real(self, data_cfg):
    tf = tf_cpu.tensorflow()
    if self.path:
      listing = image_listing.list_image_folder(data_cfg.image_folder, 'val')
      sets = real_label_sets(self.path, listing.files)
      ds = tf.data.Dataset.from_tensor_slices((listing.paths, sets))
      return ds, len(listing), None
    tfds_cfg = _tfds_config(data_cfg, 'imagenet2012_real', 'validation')
    builder = tfds_sources.builder_of(
      tfds_cfg, features=('image', 'real_label')
    )
    ds = tfds_sources.records(builder, 'validation', label='real_label')
    # Padded to the number of classes, the most a set can hold: no set
    # is cut short (ReaL's sets hold up to a handful of labels).
    width = data_cfg.num_classes
    ds = ds.map(lambda image, labels: (image, _padded(tf, labels, width)))
    return ds, builder.info.splits['validation'].num_examples, None


def _padded(tf, labels, width: int):
  labels = tf.cast(labels, tf.int32)
  return tf.pad(labels, [[0, width - tf.shape(labels)[0]]], constant_values=-1)


def _tfds_config(data_cfg, name: str, split: str):
  """The run's data section, pointed at tfds dataset `name`'s `split`."""
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.name, cfg.val_split, cfg.image_folder = name, split, None
  return cfg


def numbered_folder(path: str) -> image_listing.Listing:
  """ImageNet-V2's layout: PATH/<class index>/*.jpeg, the folder names
  being class indices (0-999), not names sorted as text."""
  path = path.rstrip('/')
  root, split = os.path.dirname(path), os.path.basename(path)
  listing = image_listing.list_image_folder(root, split)
  if not all(c.isdigit() for c in listing.classes):
    shown = next(c for c in listing.classes if not c.isdigit())
    raise ConfigError(
      f'{path}/{shown}: an ImageNet-V2 folder holds class folders named '
      'by class index (0 to 999)'
    )
  index = np.asarray([int(c) for c in listing.classes], np.int32)
  labels = index[listing.labels]
  labels.flags.writeable = False
  return dataclasses.replace(listing, labels=labels)


def real_label_sets(path: str, files) -> np.ndarray:
  """(len(files), K) int32: each val file's ReaL labels from real.json
  (by the number in its name), padded with -1 to the longest set's K."""
  real = _real_json(path)
  width = max([1, *map(len, real)])
  sets = np.full((len(files), width), -1, np.int32)
  for row, name in enumerate(files):
    match = _VAL_NUMBER.search(os.path.basename(name))
    if not match:
      raise ConfigError(
        f'{name}: ReaL labels validation images by their number '
        '(ILSVRC2012_val_00000001.JPEG ...)'
      )
    number = int(match.group(1))
    if not 1 <= number <= len(real):
      raise ConfigError(f'{name}: no entry {number} in {path}')
    labels = real[number - 1]
    sets[row, : len(labels)] = labels
  return sets
