"""The splits an image set is evaluated (or counted) on, behind one small
interface, SplitSource: 'train' or 'val' of an image folder or a tfds
dataset, or a test set beside the run's data (ImageNet-V2, ReaL). The
pipelines that read them: image_sets.py."""

import dataclasses
from typing import Any
from typing import Protocol

from resnet_jax.data import image_listing
from resnet_jax.data import tf_cpu
from resnet_jax.data import tfds_sources


class SplitSource(Protocol):
  """A split to evaluate (or to count), whatever holds it: `records()`
  gives (tf.data of (path or encoded image, label) in the stored order,
  examples, class names); `size()` the same counts reading no image;
  `reads_paths` whether the records are file paths (else encoded
  images)."""

  reads_paths: bool

  def records(self): ...

  def size(self) -> tuple[int, list | None]: ...


@dataclasses.dataclass(frozen=True)
class FolderSplit:
  """ROOT/SPLIT of an image folder (its listing, if already made)."""

  root: str
  split: str
  listing: image_listing.Listing | None = None
  reads_paths = True

  def records(self):
    return folder_dataset(self.root, self.split)

  def size(self):
    listing = self.listing or image_listing.list_image_folder(
      self.root, self.split
    )
    return len(listing), list(listing.classes)


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """'train' or 'val' of tfds dataset data.name (data.train_split or
  data.val_split)."""

  data_cfg: Any
  split: str
  reads_paths = False

  def records(self):
    return tfds_sources.dataset(self.data_cfg, self.split)

  def size(self):
    builder = tfds_sources.builder_of(self.data_cfg)
    _, examples = tfds_sources.split_of(builder, self.data_cfg, self.split)
    return examples, builder.info.features['label'].names


@dataclasses.dataclass(frozen=True)
class TestSetSplit:
  """A test set beside the run's data (data/imagenet_variants.TestSet:
  ImageNet-V2, ReaL), which has no class names."""

  test_set: Any
  data_cfg: Any

  @property
  def reads_paths(self):
    return self.test_set.reads_paths

  def records(self):
    return self.test_set.source(self.data_cfg)

  def size(self):
    return self.test_set.source(self.data_cfg)[1], None


def source(data_cfg, split, listing=None) -> SplitSource:
  """The source of `split`: 'train' or 'val' of the run's data (an image
  folder, whose `listing` may be made already, or a tfds dataset), or a
  test set."""
  if not isinstance(split, str):
    return TestSetSplit(split, data_cfg)
  if data_cfg.image_folder:
    return FolderSplit(data_cfg.image_folder, split, listing)
  return TfdsSplit(data_cfg, split)


def folder_dataset(root: str, split: str):
  """(tf.data of (path, label), number of examples, class names); the
  files are read later, after sharding and skipping."""
  tf = tf_cpu.tensorflow()
  listing = image_listing.list_image_folder(root, split)
  return (
    tf.data.Dataset.from_tensor_slices((listing.paths, listing.labels)),
    len(listing),
    list(listing.classes),
  )
