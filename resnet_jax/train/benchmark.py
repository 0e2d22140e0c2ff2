"""Timing the compiled training step, the real loop, the host input pipeline
and the listing of an image folder (the benchmark command)."""

import itertools
import os
import tempfile
import time

import jax

from resnet_jax import parallel
from resnet_jax.data import inputs
from resnet_jax.data import tf_cpu
from resnet_jax.run import layout
from resnet_jax.train import loop


def step_report(
  config, num_steps: int, warmup: int, synthetic: bool = False
) -> dict:
  """The compiled step alone on data already on the device (CIFAR: the
  resident dataset; ImageNet: one host batch, fed again and again;
  `synthetic`: one random batch, no data read at all): images/s, and the
  seconds the first call took beyond a steady one (compilation)."""
  exp = loop.setup(config, data=inputs.Synthetic(config) if synthetic else None)
  state = loop.initial_state(exp)
  if exp.input.kind == 'device':
    train_fn = loop.train_fn(exp, 0)
  else:  # one batch, put on the mesh once and fed again and again
    first = parallel.shard_batch(exp.mesh, next(exp.input.batches(0)))
    train_fn = loop.train_fn(exp, 0, batches=itertools.repeat(first))
  per_call = config.train.steps_per_dispatch
  start = time.perf_counter()
  state, metrics = train_fn(state, per_call)
  jax.block_until_ready(state)
  first = time.perf_counter() - start
  for _ in range(max(0, warmup // per_call - 1)):
    state, metrics = train_fn(state, per_call)
  jax.block_until_ready(state)
  calls = max(1, num_steps // per_call)
  start = time.perf_counter()
  for _ in range(calls):
    state, metrics = train_fn(state, per_call)
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - start
  return dict(
    step_images_per_sec=calls * per_call * config.train.batch_size / seconds,
    compile_seconds=first - seconds / calls,
  )


# Dense peak FLOP/s of one device by its JAX device_kind and the compute
# dtype (float32 on these GPUs runs as TF32 by default), from the vendors'
# data sheets; the SXM parts.
PEAK_FLOPS = {
  ('NVIDIA H100 80GB HBM3', 'bfloat16'): 989e12,
  ('NVIDIA H100 80GB HBM3', 'float32'): 495e12,
  ('NVIDIA H200', 'bfloat16'): 989e12,
  ('NVIDIA H200', 'float32'): 495e12,
  ('NVIDIA A100-SXM4-80GB', 'bfloat16'): 312e12,
  ('NVIDIA A100-SXM4-80GB', 'float32'): 156e12,
  ('NVIDIA A100-SXM4-40GB', 'bfloat16'): 312e12,
  ('NVIDIA A100-SXM4-40GB', 'float32'): 156e12,
}


def utilisation(
  config, images_per_sec: float, peak_tflops: float | None = None
) -> dict:
  """Model FLOP utilisation of the devices at `images_per_sec`: training
  FLOPs per image are 3 x 2 x the forward multiply-accumulates (forward,
  and the backward's two products), counted from the layers' shapes; the
  peak is the device's (PEAK_FLOPS, or `peak_tflops`). Also the peak
  device memory, where the platform reports it (not on CPU)."""
  from resnet_jax.model import counting
  from resnet_jax.model import resnet

  model = resnet.build(config.model, config.data.num_classes)
  macs = counting.count(model, config.data.image_size)['macs']
  achieved = 6 * macs * images_per_sec
  device = jax.devices()[0]
  peak = (
    peak_tflops * 1e12
    if peak_tflops
    else PEAK_FLOPS.get((device.device_kind, config.model.dtype))
  )
  stats = device.memory_stats() or {}
  return dict(
    model_flops_per_image=6 * macs,
    achieved_tflops=achieved / 1e12,
    peak_tflops_per_device=peak / 1e12 if peak else None,
    mfu=achieved / (peak * jax.device_count()) if peak else None,
    peak_device_memory_bytes=stats.get('peak_bytes_in_use'),
  )


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
    result = loop.train_and_evaluate(config, workdir)
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
  """Host pipeline images/s per core on config.data's training images, and
  the seconds building the training pipeline takes (TensorFlow imported)."""
  from resnet_jax.data import image_ops
  from resnet_jax.data import image_sets
  from resnet_jax.data import splits

  data = config.data
  cores = len(os.sched_getaffinity(0))
  batch = 64
  report = dict(
    cores=cores,
    images=images,
    train_crop=data.train_crop,
    auto_augment=data.auto_augment,
    random_erasing=data.random_erasing,
  )
  tf = tf_cpu.tensorflow()  # imported before the clock starts
  start = time.perf_counter()
  train = image_sets.train_dataset(data, batch, seed=0)
  report['train_pipeline_build_s'] = round(time.perf_counter() - start, 3)
  report['input_images_per_sec_per_core'] = (
    _images_per_sec(train, images) / cores
  )
  # The reference: each whole JPEG decoded, and nothing else.
  train = splits.source(data, 'train')
  files, _, _ = train.records()
  read = image_sets.read_jpeg(tf, train.reads_paths)
  bare = (
    files.repeat()
    .map(
      lambda *example: tf.shape(image_ops.decode(read(*example)[0])),
      num_parallel_calls=tf.data.AUTOTUNE,
    )
    .batch(batch)
    .map(lambda x: (x,))
    .prefetch(tf.data.AUTOTUNE)
  )
  report['bare_decode_images_per_sec_per_core'] = (
    _images_per_sec(bare, images) / cores
  )
  for name, protocol in image_sets.PROTOCOLS.items():
    if not protocol.whole_images:
      ds = image_sets.eval_dataset(data, 'train', batch, name).repeat()
      report[f'eval_{name}_images_per_sec_per_core'] = (
        _images_per_sec(ds, images) / cores
      )
      continue
    # Every image at all the sides: the per-image time is the sum of the
    # per-side times.
    seconds_per_image = 0.0
    for side in data.eval_scales:
      ds = image_sets.eval_dataset(data, 'train', 1, name, side=side).repeat()
      seconds_per_image += 1 / _images_per_sec(ds, max(images // 10, 40))
    report[f'eval_{name}_images_per_sec_per_core'] = (
      1 / seconds_per_image / cores
    )
  return {
    k: round(v, 1) if k.endswith('_per_core') else v for k, v in report.items()
  }


IMAGENET_TRAIN_FILES = 1_281_167


def make_folder(root: str, files: int, classes: int = 1000):
  """ROOT/train/<class>/*.JPEG: `files` empty files over `classes`
  folders named like ImageNet's, for timing a listing."""
  for c in range(classes):
    folder = os.path.join(root, 'train', f'n{c:08d}')
    os.makedirs(folder)
    for i in range(c, files, classes):
      open(os.path.join(folder, f'n{c:08d}_{i}.JPEG'), 'w').close()


def listing_report(root: str, files: int) -> dict:
  """Files/s of listing ROOT/train, and of the workdir's copy of it."""
  from resnet_jax.data import image_listing

  if not os.path.exists(root):
    make_folder(root, files)
  start = time.perf_counter()
  listing = image_listing.list_image_folder(root, 'train')
  seconds = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as workdir:
    path = layout.path(workdir, layout.TRAIN_FILES)
    start = time.perf_counter()
    listing.save(path)
    saved = time.perf_counter() - start
    start = time.perf_counter()
    image_listing.Listing.load(path, root)
    loaded = time.perf_counter() - start
  n = len(listing)
  return dict(
    files=n,
    classes=len(listing.classes),
    list_seconds=round(seconds, 3),
    files_per_sec=round(n / seconds),
    imagenet_list_seconds=round(IMAGENET_TRAIN_FILES * seconds / n, 1),
    imagenet_save_seconds=round(IMAGENET_TRAIN_FILES * saved / n, 1),
    imagenet_resume_read_seconds=round(IMAGENET_TRAIN_FILES * loaded / n, 1),
  )
