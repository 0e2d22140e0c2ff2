"""The tensorflow-datasets path, prepared for real from the bundled sample.

tfds' own cifar10 builder prepares the dataset; only its download is
replaced by a folder in the official archive's layout, so the test needs
no network and reads back exactly the images it wrote.
"""

import shutil
from unittest import mock

import numpy as np
import pytest

from resnet_jax.data import cifar
from tests.helpers import REPO

SAMPLE = REPO / 'data' / 'cifar10-sample'


def as_set(split):
  """(label, image bytes) pairs: tfds shuffles the order when it writes."""
  return {(int(y), x.tobytes()) for y, x in zip(split.labels, split.images)}


@pytest.fixture(scope='module')
def official_archive(tmp_path_factory):
  """cifar-10-batches-bin/ with five small training files and a test file,
  all real images from the bundled sample."""
  root = tmp_path_factory.mktemp('download')
  folder = root / 'cifar-10-batches-bin'
  folder.mkdir()
  records = np.fromfile(SAMPLE / 'data_batch_1.bin', np.uint8).reshape(-1, 3073)
  for i in range(5):
    records[i * 40 : (i + 1) * 40].tofile(folder / f'data_batch_{i + 1}.bin')
  records[200:250].tofile(folder / 'test_batch.bin')
  shutil.copy(SAMPLE / 'batches.meta.txt', folder / 'batches.meta.txt')
  return root, records


def test_tfds_prepares_then_reads_back(official_archive, tmp_path):
  import tensorflow_datasets as tfds

  root, records = official_archive
  data_dir = str(tmp_path / 'tfds')
  with mock.patch.object(
    tfds.download.DownloadManager,
    'download_and_extract',
    return_value=str(root),
  ):
    train, test = cifar.load_tfds('cifar10', data_dir, download=True)
  assert (len(train), len(test)) == (200, 50)
  expected = cifar.read_binary(
    str(root / 'cifar-10-batches-bin' / 'test_batch.bin'), 'cifar10', 10
  )
  assert as_set(test) == as_set(expected)
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  # Prepared now: reading again needs no download at all.
  again, _ = cifar.load_tfds('cifar10', data_dir, download=False)
  assert as_set(again) == as_set(train)
