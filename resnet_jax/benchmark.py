"""Images/s of the compiled training step alone and of the real loop, or
of the ImageNet host input pipeline alone.

  python -m resnet_jax.benchmark --config=configs/cifar10.py:resnet20
  python -m resnet_jax.benchmark --config=configs/imagenet.py:resnet50 \
      --input_only --config.data.image_folder=data/imagenet-sample

`step_images_per_sec`: the compiled step called back to back on
device-resident data, timed after compilation. `loop_images_per_sec`:
train_lib.train_and_evaluate itself (batch selection, metrics fetched when
logged, logging, the final checkpoint) in a temporary workdir, with
evaluation off and the compiling first log interval excluded. The last
stdout line is one JSON object.
"""

import datetime
import json
import os
import platform
import tempfile
import time

from absl import flags
import jax
from ml_collections import config_flags

from resnet_jax import errors
from resnet_jax import train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Timed steps for each figure.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Untimed steps (compilation).')
_INPUT_ONLY = flags.DEFINE_bool(
  'input_only',
  False,
  'Time the host input pipeline alone: images/s per CPU core for the '
  'training augmentation and each evaluation protocol.',
)
_IMAGES = flags.DEFINE_integer('images', 2000, 'Timed images per figure.')
_CHECKPOINT_EVERY = flags.DEFINE_integer(
  'checkpoint_every',
  None,
  'Also time the loop saving a checkpoint every this many steps.',
)


def step_images_per_sec(config, num_steps: int, warmup: int) -> float:
  """The compiled step alone on data already on the device (CIFAR: the
  resident dataset; ImageNet: one host batch, fed again and again)."""
  exp = train_lib.setup(config)
  state = train_lib.initial_state(exp)
  train_fn = exp.input.train_fn(
    exp.mesh,
    model=exp.model,
    tx=exp.tx,
    lr_fn=exp.lr_fn,
    start_step=0,
    bare=True,
  )
  for _ in range(warmup):
    state, metrics = train_fn(state)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = train_fn(state)
  jax.block_until_ready((state, metrics))
  return num_steps * config.train.batch_size / (time.perf_counter() - start)


def loop_images_per_sec(
  config, num_steps: int, warmup: int, checkpoint_every: int | None = None
) -> float:
  """The loop's own steady images/s; checkpoints only at the end unless
  `checkpoint_every` is given."""
  config = config.copy_and_resolve_references()
  t = config.train
  # Log intervals: the first holds compilation and is excluded; at least
  # four timed ones follow, at the config's frequency if it allows.
  every = max(1, num_steps // 4)
  if t.unit == 'steps':
    every = min(int(t.log_every), every)
  t.unit, t.log_every, t.length = 'steps', every, warmup + num_steps
  if warmup % every:  # the timed intervals start at a log step
    t.length = warmup + num_steps + (every - warmup % every)
  config.data.eval_on = 'none'
  t.checkpoint_every = checkpoint_every or t.length
  with tempfile.TemporaryDirectory() as workdir:
    result = train_lib.train_and_evaluate(config, workdir)
  return result['steady_images_per_sec']


def _images_per_sec(dataset, images: int) -> float:
  """Images/s drawn from `dataset` (batches whose first element holds the
  images), after one untimed batch."""
  it = dataset.as_numpy_iterator()
  next(it)
  start, seen = time.perf_counter(), 0
  while seen < images:
    seen += len(next(it)[0])
  return seen / (time.perf_counter() - start)


def input_report(config, images: int) -> dict:
  """Host pipeline images/s per core on config.data's training images."""
  from resnet_jax import imagenet_data
  from resnet_jax import imagenet_ops

  data = config.data
  cores = len(os.sched_getaffinity(0))
  batch = 64
  report = dict(cores=cores, images=images, train_crop=data.train_crop)
  train = imagenet_data.train_dataset(data, batch, seed=0)
  report['input_images_per_sec_per_core'] = (
    _images_per_sec(train, images) / cores
  )
  # The reference: each whole JPEG decoded, and nothing else.
  files, _, _ = imagenet_data.source(data, 'train')
  tf = imagenet_data.tensorflow_cpu()
  read = imagenet_data.read_jpeg(tf, data)
  bare = (
    files.repeat()
    .map(
      lambda *example: tf.shape(imagenet_ops.decode(read(*example)[0])),
      num_parallel_calls=tf.data.AUTOTUNE,
    )
    .batch(batch)
    .map(lambda x: (x,))
    .prefetch(tf.data.AUTOTUNE)
  )
  report['bare_decode_images_per_sec_per_core'] = (
    _images_per_sec(bare, images) / cores
  )
  for protocol in ('center', 'ten_crop'):
    ds = imagenet_data.eval_dataset(data, 'train', batch, protocol).repeat()
    report[f'eval_{protocol}_images_per_sec_per_core'] = (
      _images_per_sec(ds, images) / cores
    )
  # Multi-scale: every image at all five sides; the per-image time is the
  # sum of the per-side times.
  seconds_per_image = 0.0
  for side in data.eval_scales:
    ds = imagenet_data.eval_dataset(
      data, 'train', 1, 'multiscale', side=side
    ).repeat()
    seconds_per_image += 1 / _images_per_sec(ds, max(images // 10, 40))
  report['eval_multiscale_images_per_sec_per_core'] = (
    1 / seconds_per_image / cores
  )
  return {
    k: round(v, 1) if isinstance(v, float) else v for k, v in report.items()
  }


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  config = _CONFIG.value
  if _INPUT_ONLY.value:
    report = input_report(config, _IMAGES.value)
    report.update(date=datetime.date.today().isoformat(), host=platform.node())
    print(json.dumps(report))
    return
  step = step_images_per_sec(config, _STEPS.value, _WARMUP.value)
  loop = loop_images_per_sec(config, _STEPS.value, _WARMUP.value)
  report = dict(
    step_images_per_sec=round(step, 2),
    loop_images_per_sec=round(loop, 2),
    loop_over_step=round(loop / step, 4),
  )
  if _CHECKPOINT_EVERY.value:
    saving = loop_images_per_sec(
      config, _STEPS.value, _WARMUP.value, _CHECKPOINT_EVERY.value
    )
    report.update(
      checkpoint_every=_CHECKPOINT_EVERY.value,
      loop_with_checkpoints_images_per_sec=round(saving, 2),
      checkpoints_over_loop=round(saving / loop, 4),
    )
  device = jax.devices()[0]
  report.update(
    batch_size=config.train.batch_size,
    steps=_STEPS.value,
    devices=jax.device_count(),
    device_kind=device.device_kind,
    platform=device.platform,
    jax=jax.__version__,
    host=platform.node(),
    date=datetime.date.today().isoformat(),
  )
  print(json.dumps(report))


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  errors.run(main)
