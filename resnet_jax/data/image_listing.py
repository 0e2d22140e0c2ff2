"""The files of an image folder, listed by name: `ROOT/train/<class>/*.jpg`
and `ROOT/val/<class>/*.jpg`; the class index is the position of the
folder name in sorted order, which for ImageNet's wnids is the usual
0-999 labelling (tfds' too). A run saves its training listing in the
workdir and reads that one again on resume."""

import dataclasses
import functools
import gzip
import hashlib
import json
import os

from absl import logging
import numpy as np

from resnet_jax.errors import ConfigError

EXTENSIONS = ('.jpg', '.jpeg', '.png')


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
