"""CIFAR-10/100 as in-memory uint8 arrays, from tfds or the official binary
folder (`cifar-10-batches-bin/`), with the paper's validation split.

Everything here runs on the host once, before training; batches are then
selected and augmented on the device (see augment.py).
"""

import dataclasses
import glob
import os

from absl import logging
import numpy as np

from resnet_jax.data import tf_cpu
from resnet_jax.errors import ConfigError

PIXELS = 32 * 32 * 3
# Binary records: CIFAR-10 has one label byte; CIFAR-100 a coarse then a
# fine label byte.
LABEL_BYTES = {'cifar10': 1, 'cifar100': 2}
LOCAL_FILES = {  # dataset -> (training files glob, test file)
  'cifar10': ('data_batch_*.bin', 'test_batch.bin'),
  'cifar100': ('train.bin', 'test.bin'),
}


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # (N, 32, 32, 3) uint8
  labels: np.ndarray  # (N,) int32

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  train: Split
  eval: Split | None  # the test split, or a validation split held out
  eval_name: str  # 'test', 'validation' or 'none'


def read_binary(path: str, dataset: str, num_classes: int) -> Split:
  """One file of the official binary format, checked record by record."""
  label_bytes = LABEL_BYTES[dataset]
  record = label_bytes + PIXELS
  size = os.path.getsize(path)
  if size == 0 or size % record:
    raise ConfigError(
      f'{path}: {size} bytes is not a positive multiple of '
      f'the {record}-byte {dataset} record; is the file '
      'truncated or from another dataset?'
    )
  raw = np.fromfile(path, np.uint8).reshape(-1, record)
  labels = raw[:, label_bytes - 1].astype(np.int32)  # the (fine) label
  bad = np.flatnonzero(labels >= num_classes)
  if bad.size:
    raise ConfigError(
      f'{path}: record {bad[0]} has label {labels[bad[0]]}, '
      f'outside 0..{num_classes - 1} for {dataset}'
    )
  images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return Split(np.ascontiguousarray(images), labels)


def _concat(splits: list[Split]) -> Split:
  return Split(
    np.concatenate([s.images for s in splits]),
    np.concatenate([s.labels for s in splits]),
  )


def load_local(
  local_dir: str, dataset: str, num_classes: int, need_train: bool = True
):
  """(train, test or None) from a folder in the official binary layout;
  without `need_train` the training files may be absent (train is None)."""
  if not os.path.isdir(local_dir):
    raise ConfigError(
      f'data.local_dir={local_dir!r} is not a directory; '
      f'point it at the folder holding the {dataset} .bin '
      'files'
    )
  train_glob, test_name = LOCAL_FILES[dataset]
  files = sorted(glob.glob(os.path.join(local_dir, train_glob)))
  if not files and need_train:
    raise ConfigError(
      f'data.local_dir={local_dir!r} has no {train_glob} '
      f'files (the official {dataset} binary layout)'
    )
  train = (
    _concat([read_binary(f, dataset, num_classes) for f in files])
    if files
    else None
  )
  test_path = os.path.join(local_dir, test_name)
  test = (
    read_binary(test_path, dataset, num_classes)
    if os.path.exists(test_path)
    else None
  )
  return train, test


def load_tfds(name: str, data_dir: str | None, download: bool):
  """(train, test) from tensorflow-datasets, downloading if allowed."""
  tf = tf_cpu.tensorflow()
  tfds = tf_cpu.datasets()

  builder = tfds.builder(name, data_dir=data_dir)
  prepared = tf.io.gfile.exists(
    os.path.join(builder.data_dir, 'dataset_info.json')
  )
  how = (
    f'download it on a networked machine (python -c "import '
    f"tensorflow_datasets as t; t.builder('{name}').download_and_"
    f'prepare()") and set TFDS_DATA_DIR or data.tfds_data_dir to its '
    'folder, or pass --config.data.local_dir=PATH to the official '
    'binary files'
  )
  if not prepared:
    if not download:
      raise ConfigError(
        f'tfds {name} is not prepared in {builder.data_dir} '
        f'and data.download=False: {how}'
      )
    try:
      builder.download_and_prepare()
    except Exception as e:  # offline: errors surface deep inside tfds
      first = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise ConfigError(
        f'could not download tfds {name} into '
        f'{builder.data_dir} ({type(e).__name__}: '
        f'{first[:200]}); {how}'
      ) from e

  def split(name_):
    data = tfds.as_numpy(builder.as_dataset(split=name_, batch_size=-1))
    return Split(data['image'].astype(np.uint8), data['label'].astype(np.int32))

  return split('train'), split('test')


def class_names(data_cfg) -> list[str] | None:
  """The class names in the official layout's metadata file, when the
  data is a local folder that has it."""
  name = {'cifar10': 'batches.meta.txt', 'cifar100': 'fine_label_names.txt'}
  if not data_cfg.local_dir or data_cfg.name not in name:
    return None
  path = os.path.join(data_cfg.local_dir, name[data_cfg.name])
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    names = [line.strip() for line in f if line.strip()]
  return names if len(names) == data_cfg.num_classes else None


def load(data_cfg) -> Dataset:
  """The training split and the split evaluated during training."""
  d = data_cfg
  if d.name not in LABEL_BYTES:
    raise ConfigError(
      f'data.name={d.name!r} is not one of {", ".join(LABEL_BYTES)}'
    )
  if d.eval_on not in ('test', 'validation', 'none'):
    raise ConfigError(
      f'data.eval_on={d.eval_on!r} is not one of test, validation, none'
    )
  if d.local_dir:
    train, test = load_local(d.local_dir, d.name, d.num_classes)
  else:
    train, test = load_tfds(d.name, d.tfds_data_dir, d.download)
  if not 0 <= d.validation_size < len(train):
    raise ConfigError(
      f'data.validation_size={d.validation_size} must be in '
      f'0..{len(train) - 1} ({len(train)} training images)'
    )
  validation = None
  if d.validation_size:
    # The last examples, always the same ones: the paper's 45k/5k split.
    cut = len(train) - d.validation_size
    validation = Split(train.images[cut:], train.labels[cut:])
    train = Split(train.images[:cut], train.labels[:cut])
  eval_on = d.eval_on
  if eval_on == 'test' and test is None:
    eval_on = 'validation' if validation is not None else 'none'
    logging.warning(
      'no test split in %s: evaluating on %s', d.local_dir, eval_on
    )
  if eval_on == 'validation' and validation is None:
    raise ConfigError(
      'data.eval_on=validation needs data.validation_size '
      '> 0 (the paper holds out 5000)'
    )
  chosen = {'test': test, 'validation': validation, 'none': None}[eval_on]
  return Dataset(train, chosen, eval_on)


def load_eval(data_cfg) -> tuple[Split, str]:
  """Only the split to evaluate on, and its name. The test split needs no
  training files: a folder holding just test_batch.bin will do."""
  d = data_cfg
  if d.eval_on != 'test':
    dataset = load(d)
    if dataset.eval is None:
      raise ConfigError(
        f'nothing to evaluate: data.eval_on is {dataset.eval_name!r}'
      )
    return dataset.eval, dataset.eval_name
  if d.local_dir:
    _, test = load_local(d.local_dir, d.name, d.num_classes, need_train=False)
    if test is None:
      raise ConfigError(
        f'data.local_dir={d.local_dir!r} has no '
        f'{LOCAL_FILES[d.name][1]} to evaluate on'
      )
    return test, 'test'
  return load_tfds(d.name, d.tfds_data_dir, d.download)[1], 'test'


def pixel_mean(images: np.ndarray) -> np.ndarray:
  """Per-pixel mean of the training images (section 4.2), float32."""
  return images.mean(axis=0, dtype=np.float64).astype(np.float32)
