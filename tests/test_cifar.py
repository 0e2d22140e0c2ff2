"""Reading the official CIFAR binary layout, and its bad inputs."""

import os
import shutil
from unittest import mock

import numpy as np
import pytest

from resnet_jax.data import cifar
from resnet_jax.errors import ConfigError
from tests.helpers import REPO
from tests.helpers import load_config


def data_config(local_dir, **overrides):
  config = load_config('configs/cifar10.py:resnet20').data
  config.local_dir = str(local_dir)
  for key, value in overrides.items():
    config[key] = value
  return config


def test_reads_sample_as_official_layout():
  raw = np.fromfile(SAMPLE / 'data_batch_1.bin', np.uint8).reshape(-1, 3073)
  split = cifar.read_binary(str(SAMPLE / 'data_batch_1.bin'), 'cifar10', 10)
  assert split.images.shape == (1000, 32, 32, 3)
  assert split.images.dtype == np.uint8
  np.testing.assert_array_equal(split.labels, raw[:, 0])
  # Pixel (row 5, col 7) of image 3: red, green, blue planes of 1024 bytes.
  r, g, b = (raw[3, 1 + c * 1024 + 5 * 32 + 7] for c in range(3))
  np.testing.assert_array_equal(split.images[3, 5, 7], [r, g, b])


def test_validation_split_and_missing_test_fallback():
  data = cifar.load(data_config(SAMPLE, validation_size=300))
  assert len(data.train) == 1700 and len(data.eval) == 300
  assert data.eval_name == 'validation'  # no test_batch.bin in the sample
  everything = cifar.load(data_config(SAMPLE))
  assert len(everything.train) == 2000 and everything.eval is None
  np.testing.assert_array_equal(
    data.eval.images, everything.train.images[1700:]
  )


def test_test_batch_is_the_eval_split(tmp_path):
  shutil.copy(SAMPLE / 'data_batch_1.bin', tmp_path / 'data_batch_1.bin')
  shutil.copy(SAMPLE / 'data_batch_2.bin', tmp_path / 'test_batch.bin')
  data = cifar.load(data_config(tmp_path))
  assert (len(data.train), len(data.eval), data.eval_name) == (
    1000,
    1000,
    'test',
  )
  os.remove(tmp_path / 'data_batch_1.bin')  # evaluation alone needs no train
  split, name = cifar.load_eval(data_config(tmp_path))
  assert (len(split), name) == (1000, 'test')


def test_pixel_mean():
  images = cifar.load(data_config(SAMPLE)).train.images
  mean = cifar.pixel_mean(images)
  assert mean.shape == (32, 32, 3) and mean.dtype == np.float32
  # The shared subset's README: per-channel means near (125.7, 123.3, 114.2).
  np.testing.assert_allclose(
    mean.mean(axis=(0, 1)), [125.7, 123.3, 114.2], atol=3
  )


def write(path, data: bytes):
  path.write_bytes(data)
  return path


@pytest.mark.parametrize(
  'case,message',
  [
    ('missing', 'is not a directory'),
    ('empty', 'has no data_batch_'),
    ('truncated', 'not a positive multiple of the 3073-byte'),
    ('zero_bytes', 'not a positive multiple'),
    ('bad_label', 'has label 12, outside 0..9'),
  ],
)
def test_bad_local_dir(tmp_path, case, message):
  record = bytearray(np.fromfile(SAMPLE / 'data_batch_1.bin', np.uint8)[:3073])
  local = tmp_path / 'cifar'
  if case != 'missing':
    local.mkdir()
  if case == 'truncated':
    write(local / 'data_batch_1.bin', bytes(record * 2)[:-5])
  elif case == 'zero_bytes':
    write(local / 'data_batch_1.bin', b'')
  elif case == 'bad_label':
    record[0] = 12
    write(local / 'data_batch_1.bin', bytes(record))
  with pytest.raises(ConfigError, match=message):
    cifar.load(data_config(local))


def test_bad_split_settings():
  with pytest.raises(ConfigError, match='validation_size=5000 must be in'):
    cifar.load(data_config(SAMPLE, validation_size=5000))
  with pytest.raises(ConfigError, match='needs data.validation_size'):
    cifar.load(data_config(SAMPLE, eval_on='validation'))
  with pytest.raises(ConfigError, match='eval_on'):
    cifar.load(data_config(SAMPLE, eval_on='train'))


def test_tfds_not_prepared_offline_says_what_to_do(tmp_path):
  config = data_config(SAMPLE, download=False)
  config.local_dir = None
  config.tfds_data_dir = str(tmp_path)
  with pytest.raises(ConfigError, match='not prepared.*local_dir'):
    cifar.load(config)
  assert not any(tmp_path.iterdir())  # nothing written


def test_cifar100_binary_layout_and_config(tmp_path):
  # Real images in CIFAR-100's record layout: coarse label, fine label, pixels.
  raw = np.fromfile(SAMPLE / 'data_batch_1.bin', np.uint8).reshape(-1, 3073)
  fine = (np.arange(len(raw)) * 7 % 100).astype(np.uint8)
  coarse = fine // 5
  records = np.concatenate([coarse[:, None], fine[:, None], raw[:, 1:]], 1)
  records[:600].tofile(tmp_path / 'train.bin')
  records[600:].tofile(tmp_path / 'test.bin')
  config = load_config('configs/cifar100.py:resnet20')
  assert (config.data.name, config.data.num_classes) == ('cifar100', 100)
  config.data.local_dir = str(tmp_path)
  data = cifar.load(config.data)
  assert (len(data.train), len(data.eval)) == (600, 400)
  np.testing.assert_array_equal(data.train.labels, fine[:600])
  reference = cifar.read_binary(str(SAMPLE / 'data_batch_1.bin'), 'cifar10', 10)
  np.testing.assert_array_equal(data.eval.images, reference.images[600:])


# tensorflow-datasets: tfds' own cifar10 builder prepares the dataset;
# only its download is replaced by a folder in the official archive's
# layout, so the test needs no network and reads back what it wrote.

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
