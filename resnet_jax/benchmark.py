"""Images/s of the compiled training step alone and of the real loop, or
of the ImageNet host input pipeline alone.

  python -m resnet_jax.benchmark --config=configs/cifar10.py:resnet20
  python -m resnet_jax.benchmark --config=configs/imagenet.py:resnet50 \
      --input_only --config.data.image_folder=data/imagenet-sample
  python -m resnet_jax.benchmark --listing=/tmp/listing --listing_files=100000

`--listing=DIR` times the listing of DIR/train/<class>/ (made first, as
--listing_files empty files over 1,000 classes, if DIR does not exist),
and the saving and reading of the run's copy of it, extrapolated to
ImageNet's 1,281,167 training files.

`step_images_per_sec`: the compiled step called back to back on
device-resident data, timed after compilation. `loop_images_per_sec`:
loop.train_and_evaluate itself (batch selection, metrics fetched when
logged, logging, the final checkpoint) in a temporary workdir, with
evaluation off and the compiling first log interval excluded. The last
stdout line is one JSON object.
"""

import datetime
import json
import platform

from absl import flags
from ml_collections import config_flags

from resnet_jax import command
from resnet_jax import errors

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  # JAX from here on: --help and a refused flag never import it.
  import jax

  from resnet_jax.train.benchmark import input_report
  from resnet_jax.train.benchmark import listing_report
  from resnet_jax.train.benchmark import loop_images_per_sec
  from resnet_jax.train.benchmark import step_report
  from resnet_jax.train.benchmark import utilisation

  if FLAGS.listing:
    report = listing_report(FLAGS.listing, FLAGS.listing_files)
    report.update(date=datetime.date.today().isoformat(), host=platform.node())
    print(json.dumps(report))
    return
  config = FLAGS.config
  if config is None:
    raise errors.ConfigError('--config is required (or --listing=DIR)')
  if FLAGS.input_only:
    report = input_report(config, FLAGS.images)
    report.update(date=datetime.date.today().isoformat(), host=platform.node())
    print(json.dumps(report))
    return
  report = step_report(config, FLAGS.steps, FLAGS.warmup, FLAGS.synthetic)
  step = report['step_images_per_sec']
  # Synthetic data has no loop to time: the loop reads the real input.
  in_loop = (
    None
    if FLAGS.synthetic
    else loop_images_per_sec(config, FLAGS.steps, FLAGS.warmup)
  )
  report.update(
    loop_images_per_sec=in_loop,
    loop_over_step=round(in_loop / step, 4) if in_loop else None,
    **utilisation(config, step, FLAGS.peak_tflops),
  )
  if FLAGS.checkpoint_every and in_loop:
    saving = loop_images_per_sec(
      config, FLAGS.steps, FLAGS.warmup, FLAGS.checkpoint_every
    )
    report.update(
      checkpoint_every=FLAGS.checkpoint_every,
      loop_with_checkpoints_images_per_sec=round(saving, 2),
      checkpoints_over_loop=round(saving / in_loop, 4),
    )
  device = jax.devices()[0]
  report.update(
    synthetic=FLAGS.synthetic,
    model=f'{config.model.family} {config.model.depth}',
    dtype=config.model.dtype,
    steps_per_dispatch=config.train.steps_per_dispatch,
    microbatches=config.train.microbatches,
    remat=config.model.remat,
    batch_size=config.train.batch_size,
    steps=FLAGS.steps,
    devices=jax.device_count(),
    device_kind=device.device_kind,
    platform=device.platform,
    jax=jax.__version__,
    host=platform.node(),
    date=datetime.date.today().isoformat(),
  )
  report = {
    k: round(v, 4 if k == 'mfu' or '_over_' in k else 2)
    if isinstance(v, float)
    else v
    for k, v in report.items()
  }
  print(json.dumps(report))


def define_flags():
  """The command's flags; defined only when run as a command, so that other
  commands (benchmarks/compare_torch.py) can import this module."""
  config_flags.DEFINE_config_file('config', None, 'Config file.')
  flags.DEFINE_integer('steps', 100, 'Timed steps for each figure.')
  flags.DEFINE_integer('warmup', 5, 'Untimed steps (compilation).')
  flags.DEFINE_bool(
    'input_only',
    False,
    'Time the host input pipeline alone: images/s per CPU core for the '
    'training augmentation and each evaluation protocol.',
  )
  flags.DEFINE_bool(
    'synthetic',
    False,
    'Time the step alone on one random batch (no dataset, no TensorFlow: '
    'the lent GPUs); the loop figure is then left out.',
  )
  flags.DEFINE_integer('images', 2000, 'Timed images per figure.')
  flags.DEFINE_float(
    'peak_tflops',
    None,
    "One device's peak TFLOP/s for `mfu`, where PEAK_FLOPS lacks the device.",
  )
  flags.DEFINE_string(
    'listing',
    None,
    'Time the listing of DIR/train/<class>/ alone (no config needed).',
  )
  flags.DEFINE_integer(
    'listing_files',
    100_000,
    'Empty files to make in --listing=DIR first, if DIR does not exist.',
  )
  flags.DEFINE_integer(
    'checkpoint_every',
    None,
    'Also time the loop saving a checkpoint every this many steps.',
  )


def cli():
  """The command (its console script, and `python -m`)."""
  define_flags()
  command.run(main)


if __name__ == '__main__':
  cli()
