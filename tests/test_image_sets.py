"""The ImageNet host pipeline on the bundled real JPEGs."""

import os
import shutil

import numpy as np
import pytest

from resnet_jax.data import image_listing
from resnet_jax.data import image_sets
from resnet_jax.data import splits
from resnet_jax.errors import ConfigError
from resnet_jax.run import layout
from tests.helpers import REPO
from tests.helpers import few_devices
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
  listing = image_listing.list_image_folder(str(FOLDER), 'train')
  assert list(listing.classes) == WNIDS and len(listing) == 40
  for path, label in zip(listing.paths, listing.labels):
    assert os.path.basename(os.path.dirname(path)) == WNIDS[label]
    assert os.path.isfile(path)


@pytest.mark.parametrize('crop', ['scale', 'inception'])
def test_training_batches(crop):
  ds = image_sets.train_dataset(data_config(train_crop=crop), 8, seed=0)
  batches = take(ds, 6)  # more than an epoch of 40: it repeats
  for images, labels in batches:
    assert images.shape == (8, 224, 224, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() >= 0
    assert labels.max() < 40
    assert images.std() > 10  # real pictures, not padding
  seen = np.concatenate([labels for _, labels in batches[:5]])
  assert sorted(seen) == list(range(40))  # one epoch: every image once


# A lossless picture whose pixels say where they are: red is the row,
# green the column (192 x 256, so both fit in a byte).
RAMP_H, RAMP_W = 192, 256


def _ramp_png(height=RAMP_H, width=RAMP_W):
  """A PNG whose pixels are (row, column, 0)."""
  from resnet_jax.data import tf_cpu

  tf = tf_cpu.tensorflow()
  rows, cols = np.mgrid[:height, :width]
  image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
  return tf.io.encode_png(image)


def _fit(values):
  """(start, length) of the window a 32-sample bilinear resize read:
  sample i reads start - 0.5 + (i + 0.5) * length / 32."""
  slope, intercept = np.polyfit(np.arange(32) + 0.5, values, 1)
  return intercept + 0.5, slope * 32


def crop_windows(crop, draws: int) -> np.ndarray:
  """(top, left, height, width, flipped) of `draws` crops of the ramp,
  read back from the crops' pixels."""
  from resnet_jax.data import tf_cpu

  tf = tf_cpu.tensorflow()
  png = _ramp_png()
  crop = tf.function(crop)  # traced once: the draws are cheap
  found = []
  for i in range(draws):
    out = crop(png, tf.constant([i, 17], tf.int64)).numpy().astype(float)
    assert out.shape == (32, 32, 3)
    top, height = _fit(out[:, :, 0].mean(1))
    columns = out[:, :, 1].mean(0)
    flipped = columns[-1] < columns[0]
    left, width = _fit(columns[::-1] if flipped else columns)
    found.append((top, left, height, width, flipped))
  return np.array(found)


def test_inception_crop_boxes_and_flips():
  """Szegedy et al.'s crop: a box of 8-100% of the area with aspect 3/4
  to 4/3 anywhere in the image, resized without antialiasing, flipped
  half the time."""
  from resnet_jax.data import image_ops

  boxes = crop_windows(lambda png, s: image_ops.inception_crop(png, s, 32), 400)
  top, left, height, width, flipped = boxes.T
  area = height * width / (RAMP_H * RAMP_W)
  assert 0.075 < area.min() < 0.09 and area.max() > 0.8  # 8%, not 10%
  assert 0.33 < area.mean() < 0.41  # TensorFlow's sampler (37%)
  aspect = width / height
  assert aspect.min() > 0.73 and aspect.max() < 1.37
  assert aspect.min() < 0.8 and aspect.max() > 1.25  # both ends reached
  assert top.min() > -1 and (top + height).max() < RAMP_H + 1
  assert left.min() > -1 and (left + width).max() < RAMP_W + 1
  assert len(np.unique(np.round(left))) > 50  # anywhere across the width
  assert 160 < flipped.sum() < 240
  for drawn in (top, left, area, aspect):  # the flip's own draw
    assert abs(np.corrcoef(drawn, flipped)[0, 1]) < 0.25


def test_inception_crop_takes_its_ranges_and_falls_back_after_ten_draws():
  """The aspect range given is the one drawn from (a square one: square
  boxes). On a 64 x 1024 image only boxes of 8-8.3% of the area fit; the
  sampler gives up after its 10 draws about a third of the time (35%
  here; with TensorFlow's default of 100 draws, never) and takes the
  whole image."""
  from resnet_jax.data import image_ops
  from resnet_jax.data import tf_cpu

  def square(png, seed):
    return image_ops.inception_crop(png, seed, 32, ratio=(1.0, 1.0))

  _, _, height, width, _ = crop_windows(square, 40).T
  np.testing.assert_allclose(width / height, 1, atol=0.05)
  tf = tf_cpu.tensorflow()
  rows, cols = np.mgrid[:64, :1024]
  strip = np.stack([rows * 4, cols // 4, 0 * rows], -1).astype(np.uint8)
  png = tf.io.encode_png(strip)
  crop = tf.function(lambda seed: image_ops.inception_crop(png, seed, 32))
  greens = [
    np.ptp(crop(tf.constant([i, 3], tf.int64)).numpy()[..., 1])
    for i in range(200)
  ]
  whole = np.mean(np.array(greens) > 200)  # a fitting box is < 86 wide
  assert 0.2 < whole < 0.5, whole


def test_scale_augment_windows_are_the_papers():
  """The paper's crop, by its defaults: shorter side S ~ U[256, 480] (every
  integer), a square window of `size` / S of the shorter side anywhere in
  the image, flipped half the time. Upsampled, a crop's corners are exact
  pixels of a ramp (row, column, 0), so the window's top, left and side
  read back exactly. 22-pixel crops of a 251-pixel shorter side take
  windows of 22 pixels at S = 256 only and of 12 at 476-480 (at 257: 21;
  at 481: 11)."""
  from resnet_jax.data import image_ops
  from resnet_jax.data import tf_cpu

  tf = tf_cpu.tensorflow()
  png = _ramp_png(251, 256)

  def corners(i):
    seed = tf.stack([i, tf.constant(17, tf.int64)])
    out = image_ops.scale_augment(png, seed, size=22)
    return out[0, 0, 0], out[-1, 0, 0], out[0, 0, 1], out[0, -1, 1]

  draws = tf.data.Dataset.range(2000).map(corners).batch(2000)
  top, bottom, first, last = (np.array(a, int) for a in next(iter(draws)))
  side = bottom - top + 1
  flipped = last < first
  left = np.minimum(first, last)
  np.testing.assert_array_equal(abs(last - first) + 1, side)  # square
  expected = np.round(22 * 251 / np.arange(256, 481))
  assert set(side) == set(expected), sorted(set(side) ^ set(expected))
  assert top.min() == 0 and (251 - side - top).min() == 0
  assert left.min() == 0 and (256 - side - left).min() == 0
  assert 900 < flipped.sum() < 1100
  place = top / (251 - side), left / (256 - side)  # each U[0, 1]
  for a, b in [(side, place[0]), (place[0], place[1]), (place[1], flipped)]:
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.1  # drawn apart


def test_training_crops_are_not_antialiased():
  """Both training crops resize without antialiasing (for speed: crop
  scales are random anyway), so a one-pixel checkerboard shrunk about 8x
  keeps much of its contrast; a window resized as evaluation does it
  (antialiased) is grey."""
  from resnet_jax.data import image_ops
  from resnet_jax.data import tf_cpu

  tf = tf_cpu.tensorflow()
  board = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
  png = tf.io.encode_png(np.repeat(board[:, :, None], 3, -1))
  crops = {
    'inception_crop': image_ops.inception_crop,
    # shorter side 32-40: windows of 205-256 pixels, shrunk 6.4-8x
    'scale_augment': lambda png, seed, size: image_ops.scale_augment(
      png, seed, min_side=32, max_side=40, size=size
    ),
  }
  for name, crop in crops.items():
    spread = [
      crop(png, tf.constant([i, 4], tf.int64), size=32).numpy().std()
      for i in range(5)
    ]
    assert np.median(spread) > 30, (name, spread)
  evaluation = image_ops.decode_window(png, 0, 0, 200, 180, 32)
  assert evaluation.numpy().std() < 5


@pytest.mark.parametrize(
  'host_augment', [{}, dict(auto_augment='rand', random_erasing=0.5)]
)
def test_training_stream_resumes_exactly(host_augment):
  config = data_config(**host_augment)
  whole = take(image_sets.train_dataset(config, 8, seed=3), 7)
  resumed = take(image_sets.train_dataset(config, 8, seed=3, start_step=5), 2)
  for (a, la), (b, lb) in zip(whole[5:], resumed):
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a, b)  # same images, same crops
  if host_augment:  # the same examples and crops, augmented
    plain = take(image_sets.train_dataset(data_config(), 8, seed=3), 1)
    np.testing.assert_array_equal(plain[0][1], whole[0][1])
    assert not np.array_equal(plain[0][0], whole[0][0])


def test_two_processes_read_the_rows_of_one_process_batch():
  """Simulated processes (index, count): each reads its rows of the global
  batch, with the same crops as one process (seeded by stream position)."""
  config = data_config(image_size=32, scale_range=(37, 69))
  one = take(image_sets.train_dataset(config, 4, seed=1), 3)
  halves = [
    take(image_sets.train_dataset(config, 4, seed=1, process=(i, 2)), 3)
    for i in range(2)
  ]
  for step, (images, labels) in enumerate(one):
    np.testing.assert_array_equal(
      labels, np.concatenate([h[step][1] for h in halves])
    )
    np.testing.assert_array_equal(
      images, np.concatenate([h[step][0] for h in halves])
    )


def test_listing_reads_no_file_and_a_run_keeps_its_own(tmp_path):
  """20,000 empty files over 200 classes: listed by name, each one (an
  empty file is no JPEG: a listing that opened files would drop them);
  the listing saved in a workdir is what a resumed run reads, whatever
  was added to the folder since."""
  root = tmp_path / 'big'
  for c in range(200):
    folder = root / 'train' / f'n{c:08d}'
    folder.mkdir(parents=True)
    for i in range(100):
      (folder / f'n{c:08d}_{i}.JPEG').touch()
  (root / 'train' / 'n00000000' / 'notes.txt').touch()  # not by name
  listing = image_listing.list_image_folder(str(root), 'train')
  assert len(listing) == 20000 and len(listing.classes) == 200
  np.testing.assert_array_equal(listing.labels, np.repeat(np.arange(200), 100))
  assert listing.files[101] == 'n00000001/n00000001_1.JPEG'  # sorted
  workdir = tmp_path / 'run'
  workdir.mkdir()
  listing.save(str(workdir / layout.TRAIN_FILES))
  (root / 'train' / 'n00000005' / 'added.JPEG').touch()
  image_listing.list_image_folder.cache_clear()
  kept = image_listing.training_listing(
    str(root), str(workdir / layout.TRAIN_FILES)
  )
  assert kept.files == listing.files and kept.classes == listing.classes
  np.testing.assert_array_equal(kept.labels, listing.labels)
  assert len(image_listing.training_listing(str(root), None)) == 20001
  (workdir / layout.TRAIN_FILES).write_bytes(b'garbage')
  with pytest.raises(ConfigError, match='unreadable.*move it away'):
    image_listing.training_listing(str(root), str(workdir / layout.TRAIN_FILES))


def test_center_crop_counts_every_image_once_with_a_padded_mask():
  ds = image_sets.eval_dataset(data_config(), 'train', 16, 'center')
  batches = take(ds, 10)
  assert len(batches) == 3  # 16 + 16 + 8 padded to 16
  views, labels, mask = batches[-1]
  assert views.shape == (16, 1, 224, 224, 3) and views.dtype == np.uint8
  assert mask.tolist() == [1.0] * 8 + [0.0] * 8
  assert not views[8:].any()
  assert sum(int(m.sum()) for _, _, m in batches) == 40


def test_ten_crops_are_corners_centre_and_flips():
  ((views, _, mask),) = take(
    image_sets.eval_dataset(data_config(), 'train', 40, 'ten_crop'), 1
  )
  assert views.shape == (40, 10, 224, 224, 3) and mask.sum() == 40
  np.testing.assert_array_equal(views[:, 5:], views[:, :5, :, ::-1])
  assert not np.array_equal(views[:, 0], views[:, 3])  # distinct corners


def test_ten_crop_windows_and_the_antialiased_resize():
  """The ten crops are the corners and the centre (rounded down), each
  exactly, then their mirror images; the centre crop is the middle of the
  image at its scale; evaluation resizes antialiased (for the crops and
  for the multi-scale test), so a one-pixel checkerboard shrunk about 7x
  is grey."""
  from resnet_jax.data import image_ops
  from resnet_jax.data import tf_cpu

  tf = tf_cpu.tensorflow()
  ramp = tf.io.decode_png(_ramp_png()).numpy()
  views = image_ops.ten_crops(_ramp_png(), side=RAMP_H, size=32).numpy()
  windows = [(0, 0), (0, 224), (160, 0), (160, 224), (80, 112)]
  for view, (top, left) in zip(views, windows):
    np.testing.assert_array_equal(view, ramp[top : top + 32, left : left + 32])
  np.testing.assert_array_equal(views[5:], views[:5, :, ::-1])
  # The centre crop at half scale: a 64-pixel window in the middle (top
  # 64, left 96), each output pixel the mean of 2 x 2 ramp pixels.
  centre = image_ops.center_crop(_ramp_png(), side=RAMP_H // 2, size=32)
  np.testing.assert_allclose(centre[:, 0, 0], 64.5 + 2 * np.arange(32), atol=1)
  np.testing.assert_allclose(centre[0, :, 1], 96.5 + 2 * np.arange(32), atol=1)
  # JPEGs (only) are cropped before they are decoded
  assert image_ops.is_jpeg(tf.io.encode_jpeg(ramp))
  assert not image_ops.is_jpeg(_ramp_png())
  board = (np.indices((229, 343)).sum(0) % 2 * 255).astype(np.uint8)
  board = np.repeat(board[..., None], 3, -1)
  shrunk = image_ops.resize_shorter(board, 32)
  assert shrunk.shape == (32, 48, 3) and shrunk.numpy().std() < 5
  whole = image_ops.multiscale(tf.io.encode_png(board), 32)
  assert whole.shape == (2, 32, 32, 3) and whole.numpy().std() < 5


@pytest.mark.parametrize('side', [224, 480])
def test_multiscale_views_keep_the_whole_image(side):
  ds = image_sets.eval_dataset(
    data_config(), 'train', 1, 'multiscale', side=side
  )
  for views, *_ in take(ds, 40):
    assert views.shape[:2] == (1, 2) and min(views.shape[2:4]) == side
    assert max(views.shape[2:4]) % 32 == 0
    np.testing.assert_array_equal(views[0, 1], views[0, 0, :, ::-1])


def test_grayscale_and_tiny_images():
  config = data_config()
  ((views, labels, _),) = take(
    image_sets.eval_dataset(config, 'train', 40, 'center'), 1
  )
  gray = WNIDS.index('n02692877')  # a grayscale JPEG: three equal channels
  np.testing.assert_array_equal(views[gray, 0, ..., 0], views[gray, 0, ..., 2])
  tiny = WNIDS.index('n01871265')  # 75x56: the crop is the whole image
  assert views[tiny].std() > 10


def test_bad_folders(tmp_path):
  with pytest.raises(ConfigError, match='not found'):
    image_listing.list_image_folder(str(tmp_path / 'none'), 'train')
  (tmp_path / 'a' / 'train').mkdir(parents=True)
  with pytest.raises(ConfigError, match='has no class folders'):
    image_listing.list_image_folder(str(tmp_path / 'a'), 'train')
  (tmp_path / 'a' / 'train' / 'n0').mkdir()
  with pytest.raises(ConfigError, match='n0 has no JPEG images'):
    image_listing.list_image_folder(str(tmp_path / 'a'), 'train')
  with pytest.raises(ConfigError, match='not one of center'):
    image_sets.eval_dataset(data_config(), 'train', 1, 'twelve_crop')


def test_files_that_are_no_image_or_corrupt_are_skipped_when_read(
  tmp_path, capfd
):
  root = tmp_path / 'folder'
  shutil.copytree(FOLDER, root)
  first = root / 'train' / WNIDS[0]
  (first / 'fake.jpg').write_bytes(b'<html>not found</html>' + b'0' * 100)
  good = next(first.glob('*.JPEG')).read_bytes()
  (first / 'cut.jpg').write_bytes(good[:400])  # a JPEG cut short
  listing = image_listing.list_image_folder(str(root), 'train')
  assert len(listing) == 42  # listed by name: nothing is opened
  ds = image_sets.train_dataset(data_config(root), 40, seed=0)
  ((images, labels),) = take(ds, 1)  # both dropped, not fatal
  assert images.shape == (40, 224, 224, 3) and images.std() > 10
  assert f'skipping {first / "fake.jpg"} (not a JPEG' in capfd.readouterr().err
  for protocol, batch in (('center', 41), ('multiscale', 8)):
    ds = image_sets.eval_dataset(
      data_config(root), 'train', batch, protocol, side=64
    )
    counted = sum(int(m.sum()) for _, _, m, *_ in take(ds, 100))
    assert counted == 40  # in evaluation too: every other image once
  assert 'fake.jpg (not a JPEG' in capfd.readouterr().err


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
  from resnet_jax.data import inputs
  from resnet_jax.train import loop
  from tests.helpers import read_metrics

  root = tmp_path / 'folder'
  shutil.copytree(FOLDER, root)
  shutil.copytree(root / 'train', root / 'val')  # a pipeline check only
  workdir = tmp_path / 'run'
  config = imagenet_train_config(root)
  config.data.update(auto_augment='trivial', random_erasing=0.25)
  first = loop.train_and_evaluate(config, str(workdir), few_devices())
  assert first['num_examples'] == 40 and first['step'] == 4
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == [1, 2, 3, 4]
  assert all(np.isfinite(r['loss']) for r in records)
  # Resume for two more steps: the stream skips what was consumed, from
  # the files the run listed, not what the folder holds now.
  saved_list = str(workdir / layout.TRAIN_FILES)
  saved = image_listing.Listing.load(saved_list, str(root))
  listed = image_listing.list_image_folder(str(root), 'train')
  assert saved.files == listed.files
  shutil.copy(
    root / 'val' / WNIDS[0] / os.listdir(root / 'val' / WNIDS[0])[0],
    root / 'train' / WNIDS[1] / 'added.JPEG',
  )
  image_listing.list_image_folder.cache_clear()
  assert inputs.for_config(config, str(workdir)).num_train == 40
  config = imagenet_train_config(root, 6)
  config.data.update(auto_augment='trivial', random_erasing=0.25)
  more = loop.train_and_evaluate(config, str(workdir), few_devices())
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
  ds, count, names = splits.source(config, 'train').records()
  assert count == 6 and len(names) == 1000
  read = {names[label]: jpeg for jpeg, label in ds.as_numpy_iterator()}
  assert read == {p.parent.name: p.read_bytes() for p in train_files}
  val, count, _ = splits.source(config, 'val').records()
  labels_file = tfds.core.tfds_path(
    'datasets/imagenet2012/validation_labels.txt'
  )
  truth = labels_file.read_text().split()[:3]
  got = sorted((jpeg, names[label]) for jpeg, label in val.as_numpy_iterator())
  assert count == 3
  assert got == sorted(zip((p.read_bytes() for p in val_files), truth))
  # Prepared now: the pipeline reads it like an image folder.
  ((views, _, mask),) = take(
    image_sets.eval_dataset(config, 'val', 4, 'center'), 1
  )
  assert views.shape == (4, 1, 224, 224, 3) and mask.tolist() == [1, 1, 1, 0]


def test_input_benchmark_reports_every_figure():
  """What `benchmark --input_only` prints (its command line: the CIFAR
  benchmark in tests/test_loop.py)."""
  from resnet_jax.train import benchmark

  config = load_config('configs/imagenet.py:resnet18')
  config.data.image_folder = str(FOLDER)
  report = benchmark.input_report(config, 64)
  for key in (
    'input_images_per_sec_per_core',
    'bare_decode_images_per_sec_per_core',
    'eval_center_images_per_sec_per_core',
    'eval_ten_crop_images_per_sec_per_core',
    'eval_multiscale_images_per_sec_per_core',
  ):
    assert report[key] > 0, key
  assert 0 < report['train_pipeline_build_s'] < 60


def test_tfds_epochs_each_a_new_order_split_over_processes(tmp_path):
  """A tfds dataset of 48 real CIFAR pictures, each its own class (the
  label names the record): every epoch reads every record once in a new
  order, two processes read disjoint halves, and a resumed stream equals
  the uninterrupted one, crops included."""
  from resnet_jax.data import cifar
  from tests.helpers import SAMPLE
  from tests.helpers import prepare_tfds

  train, _ = cifar.load_local(str(SAMPLE), 'cifar10', 10)
  names = [f'record{i}' for i in range(48)]
  prepare_tfds(tmp_path, 'forty_eight', train.images[:48], range(48), names)
  config = data_config(
    None,
    name='forty_eight',
    tfds_data_dir=str(tmp_path),
    image_size=32,
    scale_range=(37, 69),
    shuffle_buffer=16,
  )

  def labels(ds, steps):
    return np.concatenate([y for _, y in take(ds, steps)])

  stream = labels(image_sets.train_dataset(config, 8, seed=0), 18)
  epochs = stream.reshape(3, 48)
  for epoch in epochs:
    assert sorted(epoch) == list(range(48))
  assert len({tuple(e) for e in epochs}) == 3  # each epoch its own order
  halves = [
    labels(image_sets.train_dataset(config, 8, 0, process=(i, 2)), 6)
    for i in range(2)
  ]
  assert sorted(np.concatenate(halves)) == list(range(48))
  whole = take(image_sets.train_dataset(config, 8, seed=0), 9)
  resumed = take(image_sets.train_dataset(config, 8, 0, start_step=7), 2)
  for (a, la), (b, lb) in zip(whole[7:], resumed):
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a, b)


def test_listing_benchmark_makes_and_times_a_folder(tmp_path):
  from resnet_jax.train import benchmark

  report = benchmark.listing_report(str(tmp_path / 'made'), 3000)
  assert (report['files'], report['classes']) == (3000, 1000)
  assert report['files_per_sec'] > 0
  # (From the rate: list_seconds is rounded to the millisecond.)
  assert report['imagenet_list_seconds'] == pytest.approx(
    1_281_167 / report['files_per_sec'], rel=0.05, abs=0.1
  )


def test_the_host_batch_step_mixes_across_the_global_batch(tmp_path):
  """The image-set step (host batches) pairs each example with a partner
  from the whole global batch: with synchronised BN, one mixed step with a
  teacher (distillation) on two devices has one device's loss; mixing,
  the PCA lighting noise (added on the device) and the teacher each
  change it. The lighting is ten times AlexNet's, so that noise drawn for
  the wrong positions of the global batch shows in the loss."""
  import jax

  from resnet_jax.train import loop

  teacher = tmp_path / 'teacher'
  config = imagenet_train_config(FOLDER, length=1)
  config.data.eval_on = 'none'
  config.train.seed = 1  # not the students' weights
  loop.train_and_evaluate(config, str(teacher), jax.devices()[:1])

  losses = {}
  for devices, alpha, lighting, taught in [
    (1, 0.4, 1.0, True),
    (2, 0.4, 1.0, True),
    (2, 0, 1.0, True),
    (2, 0.4, 0, True),
    (2, 0.4, 1.0, False),
  ]:
    config = imagenet_train_config(FOLDER, length=1)
    config.train.bn_sync = True
    config.data.mixup_alpha = alpha
    config.data.lighting_std = lighting
    if taught:
      config.train.teacher = str(teacher)
    exp = loop.setup(config, jax.devices()[:devices])
    _, metrics = loop.train_fn(exp, 0)(loop.initial_state(exp))
    losses[devices, alpha, lighting, taught] = float(metrics['loss'])
  taught = losses[2, 0.4, 1.0, True]
  # The distilled loss is large (about 740: T = 20, scaled by T^2), so a
  # relative 1e-6 (some ten float32 steps): noise drawn for the wrong
  # positions on one device moved it by 4e-6.
  assert taught == pytest.approx(losses[1, 0.4, 1.0, True], rel=1e-6)
  assert abs(taught - losses[2, 0, 1.0, True]) > 1e-3
  assert abs(taught - losses[2, 0.4, 0, True]) > 1e-3
  assert abs(taught - losses[2, 0.4, 1.0, False]) > 1e-3
