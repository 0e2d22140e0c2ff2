"""Class predictions of a trained network on image files or prepared batches."""

import json
import os
import re

import jax
import numpy as np

from resnet_jax import parallel
from resnet_jax.config import data_names
from resnet_jax.data import augment
from resnet_jax.data import tf_cpu
from resnet_jax.errors import ConfigError
from resnet_jax.run import layout
from resnet_jax.run import saved_config
from resnet_jax.train import saved_state


def class_names(config, workdir: str) -> list[str] | None:
  """WORKDIR/classes.json (written by training), else the label names of
  the run's tfds dataset (imagenet2012's WordNet ids for an import)."""
  path = layout.path(workdir, layout.CLASSES)
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  d = config.data
  if data_names.is_cifar(d.name) or d.image_folder or not d.name:
    return None
  tfds = tf_cpu.datasets()

  try:  # the builder's metadata ships with tfds: no data needed
    return list(tfds.builder(d.name).info.features['label'].names)
  except Exception:  # not a registered tfds dataset, or no label names
    return None


def prepare_images(config, paths, pixel_mean) -> np.ndarray:
  """Image files -> (N, H, W, 3) float32, as evaluation sees them: for a
  CIFAR run the whole picture at its size (Pillow: no TensorFlow needed),
  otherwise the evaluation's centre crop (tf.data's decoding)."""
  if data_names.is_cifar(config.data.name):
    images = [_whole_image(path, config.data.image_size) for path in paths]
  else:
    images = [_centre_crop(config, path) for path in paths]
  return np.asarray(augment.normalise(np.stack(images), pixel_mean))


def _unreadable(path, reason: str) -> ConfigError:
  return ConfigError(
    f'{path} is not a readable image (JPEG, PNG, GIF or BMP): {reason[:200]}'
  )


def _whole_image(path, size: int) -> np.ndarray:
  """CIFAR's images are whole pictures at 32x32: another size is resized
  to it (bilinear, antialiased when shrinking), as uint8 RGB."""
  from PIL import Image

  try:
    with Image.open(path) as image:
      image = image.convert('RGB')
      if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
      return np.asarray(image, np.uint8)
  except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError too
    raise _unreadable(path, str(e)) from e


def _centre_crop(config, path) -> np.ndarray:
  tf = tf_cpu.tensorflow()
  from resnet_jax.data import image_ops

  size = config.data.image_size
  side = round(size * image_ops.TEN_CROP_SIDE / image_ops.CROP)
  try:
    return image_ops.center_crop(tf.io.read_file(path), side, size).numpy()
  except (tf.errors.InvalidArgumentError, ValueError) as e:
    # TF's message, without its op and function names
    raise _unreadable(
      path, re.sub(r'\{\{.*?\}\}|\[Op:.*', '', str(e)).strip()
    ) from e


def load_batch(path: str) -> np.ndarray:
  try:
    batch = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ConfigError(f'{path} is not a readable .npy file ({e})') from e
  if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.float32:
    raise ConfigError(
      f'{path} holds {batch.dtype} {batch.shape}; expected a float32 '
      'batch (N, H, W, 3) already normalised (training mean subtracted)'
    )
  return batch


def predict(
  workdir: str, files, batch_size: int = 64, weights: str = 'raw'
) -> list[dict]:
  """The JSON records (one per image) for `files`, from the run's raw
  weights or (`weights='ema'`) their moving average."""
  if not files:
    raise ConfigError('no files: give image files or .npy batches')
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise ConfigError(f'no such file: {", ".join(missing[:3])}')
  if batch_size <= 0:
    raise ConfigError(f'--batch_size={batch_size} must be positive')
  config = saved_config.read(workdir)
  one_device = parallel.make_mesh(jax.local_devices()[:1])
  _, model, state = saved_state.load(workdir, config, one_device, weights)
  images = [f for f in files if not f.endswith('.npy')]
  batches = {f: load_batch(f) for f in files if f.endswith('.npy')}
  # Every file is read and checked before anything compiles.
  prepared = prepare_images(config, images, state.pixel_mean) if images else []
  names = class_names(config, workdir) if images else None
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  apply = jax.jit(lambda x: model.apply(variables, x, train=False))
  top = {}
  if images:
    logits = _logits(apply, prepared, batch_size)
    top = {f: _top(f, row, names) for f, row in zip(images, logits)}
  records = []
  for path in files:
    if path in top:
      records.append(top[path])
      continue
    logits = _logits(apply, batches[path], batch_size)
    records += [
      dict(file=path, index=i, logits=[float(v) for v in row])
      for i, row in enumerate(logits)
    ]
  return records


def _logits(apply, x: np.ndarray, batch_size: int) -> np.ndarray:
  """apply() over `x` in batches of `batch_size`, the last one padded (one
  compilation per image shape)."""
  out = []
  for start in range(0, len(x), batch_size):
    chunk = x[start : start + batch_size]
    real = len(chunk)
    if real < batch_size and len(x) > batch_size:
      chunk = np.concatenate([chunk, np.zeros_like(x[: batch_size - real])])
    out.append(np.asarray(apply(chunk))[:real])
  return np.concatenate(out)


def _top(path: str, logits: np.ndarray, names, k: int = 5) -> dict:
  probs = np.asarray(jax.nn.softmax(logits.astype(np.float32)))
  top = np.argsort(-probs, kind='stable')[:k]
  record = dict(file=path, top5=[int(i) for i in top])
  if names:
    record['names'] = [names[i] for i in top]
  record['probabilities'] = [round(float(probs[i]), 6) for i in top]
  return record
