"""The ImageNet host pipeline on the bundled real JPEGs (issue 5)."""

import os
import shutil

import numpy as np
import pytest

from resnet_jax import imagenet_data
from resnet_jax.errors import ConfigError
from tests.helpers import REPO
from tests.helpers import load_config

FOLDER = REPO / 'data' / 'imagenet-sample'
WNIDS = sorted(os.listdir(FOLDER / 'train'))


def data_config(folder=FOLDER, **overrides):
  config = load_config('configs/imagenet.py:resnet18').data
  config.image_folder = None if folder is None else str(folder)
  config.shuffle_buffer = 64
  config.update(overrides)
  return config


def take(ds, n):
  return [tuple(np.asarray(t) for t in b) for b in ds.take(n)]


def test_labels_follow_sorted_class_folders():
  paths, labels, classes = imagenet_data.list_image_folder(str(FOLDER), 'train')
  assert classes == WNIDS and len(paths) == 40
  for path, label in zip(paths, labels):
    assert os.path.basename(os.path.dirname(path)) == WNIDS[label]


@pytest.mark.parametrize('crop', ['scale', 'inception'])
def test_training_batches(crop):
  ds = imagenet_data.train_dataset(data_config(train_crop=crop), 8, seed=0)
  batches = take(ds, 6)  # more than an epoch of 40: it repeats
  for images, labels in batches:
    assert images.shape == (8, 224, 224, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() >= 0
    assert labels.max() < 40
    assert images.std() > 10  # real pictures, not padding
  seen = np.concatenate([labels for _, labels in batches[:5]])
  assert sorted(seen) == list(range(40))  # one epoch: every image once


def test_training_stream_resumes_exactly():
  config = data_config()
  whole = take(imagenet_data.train_dataset(config, 8, seed=3), 7)
  resumed = take(
    imagenet_data.train_dataset(config, 8, seed=3, start_step=5), 2
  )
  for (a, la), (b, lb) in zip(whole[5:], resumed):
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a, b)  # same images, same crops


def test_center_crop_counts_every_image_once_with_a_padded_mask():
  ds = imagenet_data.eval_dataset(data_config(), 'train', 16, 'center')
  batches = take(ds, 10)
  assert len(batches) == 3  # 16 + 16 + 8 padded to 16
  views, labels, mask = batches[-1]
  assert views.shape == (16, 1, 224, 224, 3) and views.dtype == np.uint8
  assert mask.tolist() == [1.0] * 8 + [0.0] * 8
  assert not views[8:].any()
  assert sum(int(m.sum()) for _, _, m in batches) == 40


def test_ten_crops_are_corners_centre_and_flips():
  ((views, _, mask),) = take(
    imagenet_data.eval_dataset(data_config(), 'train', 40, 'ten_crop'), 1
  )
  assert views.shape == (40, 10, 224, 224, 3) and mask.sum() == 40
  np.testing.assert_array_equal(views[:, 5:], views[:, :5, :, ::-1])
  assert not np.array_equal(views[:, 0], views[:, 3])  # distinct corners


@pytest.mark.parametrize('side', [224, 480])
def test_multiscale_views_keep_the_whole_image(side):
  ds = imagenet_data.eval_dataset(
    data_config(), 'train', 1, 'multiscale', side=side
  )
  for views, *_ in take(ds, 40):
    assert views.shape[:2] == (1, 2) and min(views.shape[2:4]) == side
    assert max(views.shape[2:4]) % 32 == 0
    np.testing.assert_array_equal(views[0, 1], views[0, 0, :, ::-1])


def test_grayscale_and_tiny_images():
  config = data_config()
  ((views, labels, _),) = take(
    imagenet_data.eval_dataset(config, 'train', 40, 'center'), 1
  )
  gray = WNIDS.index('n02692877')  # a grayscale JPEG: three equal channels
  np.testing.assert_array_equal(views[gray, 0, ..., 0], views[gray, 0, ..., 2])
  tiny = WNIDS.index('n01871265')  # 75x56: the crop is the whole image
  assert views[tiny].std() > 10


def test_bad_folders(tmp_path):
  with pytest.raises(ConfigError, match='not found'):
    imagenet_data.list_image_folder(str(tmp_path / 'none'), 'train')
  (tmp_path / 'a' / 'train').mkdir(parents=True)
  with pytest.raises(ConfigError, match='has no class folders'):
    imagenet_data.list_image_folder(str(tmp_path / 'a'), 'train')
  (tmp_path / 'a' / 'train' / 'n0').mkdir()
  with pytest.raises(ConfigError, match='n0 has no JPEG images'):
    imagenet_data.list_image_folder(str(tmp_path / 'a'), 'train')
  with pytest.raises(ConfigError, match='not one of center'):
    imagenet_data.eval_dataset(data_config(), 'train', 1, 'twelve_crop')


def test_non_jpeg_skipped_corrupt_jpeg_skipped(tmp_path, caplog):
  root = tmp_path / 'folder'
  shutil.copytree(FOLDER, root)
  first = root / 'train' / WNIDS[0]
  (first / 'fake.jpg').write_bytes(b'\x89PNG\r\n\x1a\n' + b'0' * 100)
  good = next(first.glob('*.JPEG')).read_bytes()
  (first / 'cut.jpg').write_bytes(good[:400])  # a JPEG cut short
  paths, _, _ = imagenet_data.list_image_folder(str(root), 'train')
  assert str(first / 'fake.jpg') not in paths and len(paths) == 41
  assert any('fake.jpg: not a JPEG' in r.getMessage() for r in caplog.records)
  ds = imagenet_data.train_dataset(data_config(root), 41, seed=0)
  ((images, labels),) = take(ds, 1)  # the cut file is dropped, not fatal
  assert images.shape == (41, 224, 224, 3)
  for protocol, batch in (('center', 41), ('multiscale', 8)):
    ds = imagenet_data.eval_dataset(
      data_config(root), 'train', batch, protocol, side=64
    )
    counted = sum(int(m.sum()) for _, _, m, *_ in take(ds, 100))
    assert counted == 40  # in evaluation too: every other image once


def imagenet_train_config(root, length=4):
  """The ImageNet recipe and pipeline on an image folder at 32x32, with a
  CIFAR-style ResNet-8 as the network: fast enough for a CPU test (the
  pipeline does not depend on the network)."""
  config = load_config('configs/imagenet.py:resnet18')
  config.model = load_config('configs/quickstart.py:resnet8').model
  config.data.update(
    dict(
      image_folder=str(root),
      num_classes=40,
      image_size=32,
      scale_range=(37, 69),  # 256..480 in proportion to 224
      eval_scales=(32, 48),
      shuffle_buffer=64,
      mean_images=40,
    )
  )
  config.train.update(
    dict(
      unit='steps',
      length=length,
      batch_size=8,
      eval_batch_size=16,
      log_every=1,
      eval_every=4,
      checkpoint_every=2,
    )
  )
  return config


def test_image_folder_trains_resumes_and_evaluates(tmp_path):
  from resnet_jax import train_lib
  from tests.helpers import read_metrics

  root = tmp_path / 'folder'
  shutil.copytree(FOLDER, root)
  shutil.copytree(root / 'train', root / 'val')  # a pipeline check only
  workdir = tmp_path / 'run'
  config = imagenet_train_config(root)
  first = train_lib.train_and_evaluate(config, str(workdir))
  assert first['num_examples'] == 40 and first['step'] == 4
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == [1, 2, 3, 4]
  assert all(np.isfinite(r['loss']) for r in records)
  # Resume for two more steps: the stream skips what was consumed.
  more = train_lib.train_and_evaluate(
    imagenet_train_config(root, 6), str(workdir)
  )
  assert more['step'] == 6
  assert [r['step'] for r in read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]


def test_tfds_imagenet2012_prepares_from_tiny_official_archives(tmp_path):
  """The official layout in tfds' manual folder, built from bundled JPEGs:
  ILSVRC2012_img_train.tar holds one <wnid>.tar per class; the validation
  tar holds ILSVRC2012_val_<n>.JPEG, labelled by tfds' own label list."""
  import io
  import tarfile

  import tensorflow_datasets as tfds

  manual = tmp_path / 'manual'
  manual.mkdir()
  files = sorted((FOLDER / 'train').glob('*/*.JPEG'))
  train_files, val_files = files[:6], files[6:9]

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  with tarfile.open(manual / 'ILSVRC2012_img_train.tar', 'w') as outer:
    for path in train_files:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as tar:
        add(tar, f'{path.parent.name}_1.JPEG', path.read_bytes())
      add(outer, f'{path.parent.name}.tar', inner.getvalue())
  with tarfile.open(manual / 'ILSVRC2012_img_val.tar', 'w') as tar:
    for i, path in enumerate(val_files):
      add(tar, f'ILSVRC2012_val_{i + 1:08d}.JPEG', path.read_bytes())

  config = data_config(
    None, manual_dir=str(manual), tfds_data_dir=str(tmp_path / 'tfds')
  )
  ds, count, names = imagenet_data.source(config, 'train')
  assert count == 6 and len(names) == 1000
  read = {names[label]: jpeg for jpeg, label in ds.as_numpy_iterator()}
  assert read == {p.parent.name: p.read_bytes() for p in train_files}
  val, count, _ = imagenet_data.source(config, 'val')
  labels_file = tfds.core.tfds_path(
    'datasets/imagenet2012/validation_labels.txt'
  )
  truth = labels_file.read_text().split()[:3]
  got = sorted((jpeg, names[label]) for jpeg, label in val.as_numpy_iterator())
  assert count == 3
  assert got == sorted(zip((p.read_bytes() for p in val_files), truth))
  # Prepared now: the pipeline reads it like an image folder.
  ((views, _, mask),) = take(
    imagenet_data.eval_dataset(config, 'val', 4, 'center'), 1
  )
  assert views.shape == (4, 1, 224, 224, 3) and mask.tolist() == [1, 1, 1, 0]


def test_input_benchmark_prints_json():
  import json

  from tests.helpers import run_cli

  result = run_cli(
    '-m',
    'resnet_jax.benchmark',
    '--config=configs/imagenet.py:resnet18',
    '--input_only',
    f'--config.data.image_folder={FOLDER}',
    '--images=64',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  for key in (
    'input_images_per_sec_per_core',
    'bare_decode_images_per_sec_per_core',
    'eval_center_images_per_sec_per_core',
    'eval_ten_crop_images_per_sec_per_core',
    'eval_multiscale_images_per_sec_per_core',
  ):
    assert report[key] > 0, key
