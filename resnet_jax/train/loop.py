"""train_and_evaluate(config, workdir): the training loop and its helpers.

The same call serves train.py, the tests, notebooks and the benchmark.
Everything that can be wrong with the input (config values, data, device
count) is checked in `setup`, before anything compiles and before the
workdir is touched.
"""

import dataclasses
from typing import Any
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp

from resnet_jax import parallel
from resnet_jax.config import keys
from resnet_jax.data import augment
from resnet_jax.data import inputs
from resnet_jax.errors import ConfigError
from resnet_jax.errors import Stopped
from resnet_jax.eval import evaluator
from resnet_jax.model import resnet
from resnet_jax.run import checkpoint
from resnet_jax.run import layout
from resnet_jax.run import lock
from resnet_jax.run import metrics_writer
from resnet_jax.run import mlflow_sink
from resnet_jax.run import preemption
from resnet_jax.run import profiler
from resnet_jax.run import resume
from resnet_jax.run import workdir_files
from resnet_jax.train import distill
from resnet_jax.train import finetune
from resnet_jax.train import optim
from resnet_jax.train import steps
from resnet_jax.train import train_state


@dataclasses.dataclass
class TrainingSetup:
  """What a run needs, built and checked from the config."""

  config: Any
  mesh: jax.sharding.Mesh
  model: resnet.ResNet
  tx: Any
  lr_fn: Callable
  input: Any  # inputs.DeviceResident, inputs.Streaming or inputs.Synthetic
  evaluator: Any  # evaluator.build's, or None (data.eval_on='none')
  steps_per_epoch: int
  total_steps: int
  mixing: augment.Mixing | None = None  # mixup / CutMix; None: off
  teacher: distill.Teacher | None = None  # distillation; None: off

  def to_steps(self, value) -> int:
    return optim.to_steps(value, self.config.train.unit, self.steps_per_epoch)


def setup(config, devices=None, data=None, workdir=None) -> TrainingSetup:
  """Checks the config and loads the data (or takes `data`, an input such
  as inputs.Synthetic); raises ConfigError on bad input. A `workdir` that
  a run has used already gives it the files that run listed."""
  keys.check(config)  # first: every numeric key in its range
  mlflow_sink.check(config)  # the tracker's client, where one is named
  t = config.train
  teacher = distill.check(config, workdir)
  mesh = parallel.make_mesh(devices)
  if t.batch_size % mesh.size:
    raise ConfigError(
      f'train.batch_size={t.batch_size} does not divide over '
      f'{mesh.size} devices; use a multiple of {mesh.size}'
    )
  if t.eval_batch_size % mesh.size:
    raise ConfigError(
      f'train.eval_batch_size={t.eval_batch_size} does not '
      f'divide over {mesh.size} devices'
    )
  model = resnet.build(config.model, config.data.num_classes)
  if config.train.bn_sync:
    model = model.clone(bn_axis_name=parallel.AXIS)
  data = data or inputs.for_config(config, workdir)
  steps_per_epoch = data.num_train // t.batch_size
  if steps_per_epoch == 0:
    raise ConfigError(
      f'train.batch_size={t.batch_size} is larger than the '
      f'{data.num_train} training images'
    )
  size = config.data.image_size
  shape = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), shape)['params']
  tx, lr_fn = optim.optimizer(config, params, steps_per_epoch)
  total = optim.to_steps(t.length, t.unit, steps_per_epoch)
  _warn_of_boundaries_past_the_end(config, total, steps_per_epoch)
  per_device = t.batch_size // mesh.size
  if per_device % t.microbatches:
    raise ConfigError(
      f'train.microbatches={t.microbatches} does not divide the '
      f'{per_device} examples per device (batch {t.batch_size} over '
      f'{mesh.size} devices)'
    )
  if t.steps_per_dispatch > 1 and data.kind != 'device':
    raise ConfigError(
      'train.steps_per_dispatch > 1 needs the dataset on the device '
      '(CIFAR); streamed ImageNet steps are long enough to launch singly'
    )
  evaluates = data.eval_name != 'none'
  evaluation = (
    evaluator.build(config, model, data.eval_split, data.eval_name, mesh)
    if evaluates
    else None
  )
  return TrainingSetup(
    config,
    mesh,
    model,
    tx,
    lr_fn,
    data,
    evaluation,
    steps_per_epoch,
    total,
    augment.Mixing.from_config(config.data),
    teacher,
  )


def train_fn(exp: TrainingSetup, start_step: int, batches=None):
  """fn(state, num_steps=1) -> (state, the last step's metrics), compiled
  for the kind of input. Data on the device: the step picks and augments
  its own batches from (seed, step), `num_steps` in one call (each number
  compiles once). Streamed: each call takes the next host batch, sent to
  the mesh two ahead so the devices never wait on a copy. `batches`
  replaces the input's stream (the benchmark's one batch, already on the
  mesh, again and again)."""
  t, mesh = exp.config.train, exp.mesh
  common = dict(
    model=exp.model,
    tx=exp.tx,
    lr_fn=exp.lr_fn,
    seed=t.seed,
    microbatches=t.microbatches,
    label_smoothing=exp.config.optim.label_smoothing,
    mixing=exp.mixing,
    ema_decay=t.ema_decay,
    ema_warmup=t.ema_warmup,
  )
  teacher = None
  if exp.teacher is not None:
    common['distillation'] = exp.teacher.distillation(exp.config.optim)
    teacher = exp.teacher.load(mesh)
  if exp.input.kind == 'device':
    arrays = parallel.replicate(mesh, exp.input.arrays)
    compiled = {}

    def call(state, num_steps: int = 1):
      if num_steps not in compiled:
        compiled[num_steps] = steps.sharded_train_step(
          mesh,
          global_batch=t.batch_size,
          augment_images=exp.config.data.augment,
          num_steps=num_steps,
          **common,
        )
      return compiled[num_steps](state, *arrays, teacher)

    return call
  step = steps.sharded_batch_train_step(
    mesh, lighting_std=exp.input.lighting_std, **common
  )
  source = exp.input.batches(start_step) if batches is None else batches

  def put(batch):
    if isinstance(batch[0], jax.Array):
      return batch
    return parallel.shard_batch(mesh, batch)

  on_mesh = parallel.prefetch(put, source)
  return lambda state, num_steps=1: step(state, *next(on_mesh), teacher)


def _warn_of_boundaries_past_the_end(config, total: int, steps_per_epoch):
  """A learning-rate drop at or after the last step never happens: fine
  for a shortened run, worth a word (a typo in a boundary looks alike)."""
  o, t = config.optim, config.train
  if o.schedule != 'step':
    return
  for boundary in o.lr_boundaries:
    if optim.to_steps(boundary, t.unit, steps_per_epoch) >= total:
      logging.warning(
        'optim.lr_boundaries: %s is at or past the end of the run '
        '(train.length=%s %s): the learning rate is not divided there',
        boundary,
        t.length,
        t.unit,
      )


def initial_state(
  exp: TrainingSetup, pixel_mean=None
) -> train_state.TrainState:
  """Fresh parameters (from the config's seed), replicated on the mesh,
  with `pixel_mean` or the training data's."""
  if pixel_mean is None:
    pixel_mean = exp.input.pixel_mean()
  mean = parallel.replicate(exp.mesh, pixel_mean)
  size = exp.config.data.image_size

  def init(pixel_mean):
    return train_state.create(
      exp.model,
      exp.tx,
      (size, size, 3),
      pixel_mean,
      exp.config.train.seed,
      ema=exp.config.train.ema_decay is not None,
    )

  replicated = jax.sharding.NamedSharding(
    exp.mesh, jax.sharding.PartitionSpec()
  )
  return jax.jit(init, out_shardings=replicated)(mean)


def _start(exp: TrainingSetup) -> train_state.TrainState:
  """A fresh state, or for fine-tuning the source run's weights with a
  new head."""
  if 'finetune' not in exp.config:
    return initial_state(exp)
  source = finetune.source_state(exp.config)
  fresh = initial_state(exp, pixel_mean=source.pixel_mean)
  state = finetune.graft(fresh, source, exp.mesh)
  if state.ema is not None:  # the average starts at the grafted weights
    state = train_state.restart_ema(state)
  return state


def _restore(exp: TrainingSetup, mgr, workdir: str):
  """The state to start from: the newest readable checkpoint, else the
  start (fresh, or fine-tuning's)."""
  state = _start(exp)
  restored = resume.restore_newest_readable(
    mgr, state, layout.path(workdir, layout.CHECKPOINTS)
  )
  if restored is not None:
    state = restored
    logging.warning('resuming %s from step %d', workdir, int(state.step))
    resume.say_shape(workdir, exp.config, resume.mesh_shape(exp.mesh))
  if jax.process_index() == 0:  # drop what a killed run logged past it
    resume.truncate_metrics(workdir, int(jax.device_get(state.step)))
  return state


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains (resuming from WORKDIR/checkpoints if there are any), evaluates
  every `train.eval_every` and at the end; returns the final metrics.

  Refuses a workdir that another run holds (run/lock.py). Stops with
  errors.Stopped on SIGTERM/SIGINT (after saving a checkpoint at the
  current step), on a non-finite loss or gradient (keeping the last good
  checkpoint), and on a failed write (errors.WriteFailed: a full disk).
  """
  if 'finetune' in config:  # the source's normalisation, before all else
    finetune.inherit(config)
  resume.check_compatible(workdir, config)  # first: the cheapest refusal
  exp = setup(config, devices, workdir=workdir)
  workdir_files.prepare(workdir)
  with lock.hold(workdir):
    return _train(exp, workdir)


def _extra_sinks(config, workdir: str) -> list:
  """The metrics' sinks beside metrics.jsonl and TensorBoard."""
  uri = config.train.get('mlflow')
  return [mlflow_sink.MlflowSink(uri, workdir, config)] if uri else []


def _train(exp: TrainingSetup, workdir: str) -> dict:
  """The loop of train_and_evaluate, in a workdir this run holds."""
  t = exp.config.train
  saver = checkpoint.Saver(checkpoint.manager(workdir, t.keep_checkpoints))
  state = _restore(exp, saver.manager, workdir)
  workdir_files.write_start(  # only once the run can really go on
    workdir,
    exp.config,
    exp.input.classes,
    exp.input.save_listing,
    resume.mesh_shape(exp.mesh),
  )
  total, start = exp.total_steps, int(jax.device_get(state.step))
  run = train_fn(exp, start)
  evaluates = exp.evaluator is not None
  every = {
    k: exp.to_steps(t[f'{k}_every']) for k in ('log', 'eval', 'checkpoint')
  }
  writer = metrics_writer.MetricsWriter(
    workdir, total, start, extra=lambda: _extra_sinks(exp.config, workdir)
  )
  log = metrics_writer.TrainLog(writer, t.batch_size, start)
  tracer = profiler.StepTracer(workdir, t.profile_steps, start)
  result = {}

  def due(kind, done):
    return done % every[kind] == 0 or done == total

  try:
    with preemption.Watcher() as watcher:
      done = start
      tracer.after(done, state)  # a trace from the first step on
      while done < total:
        n = _steps_in_call(
          done, total, every, t.steps_per_dispatch, tracer.points
        )
        state, metrics = run(state, n)
        done += n
        tracer.after(done, state)
        log.flush()  # the previous call's, now that this one is queued
        if due('log', done):
          log.add(done, metrics)
        if evaluates and due('eval', done):
          log.flush()
          result = evaluate(exp, state, writer, done)
          log.pause_ended()
        stop = watcher.requested(done, saver.manager)
        if due('checkpoint', done) or stop:
          log.flush()
          metrics_writer.fetch_and_check(done, metrics)  # never save NaNs
          saver.save(done, state)
        if stop:
          saver.wait()
          raise Stopped(
            f'{watcher.signal_name} at step {done}: saved '
            f'{layout.path(workdir, layout.CHECKPOINTS, str(done))}; run the '
            'same command to resume',
            watcher.exit_code,
          )
      log.flush()
    if start >= total and evaluates:  # finished earlier: report, no more
      result = evaluate(exp, state)
    saver.wait()  # a failed last save is an error of this run
    writer.close()
  except FloatingPointError as e:
    saver.wait(raise_errors=False)
    good = saver.manager.latest_step()
    kept = (
      f'the last good checkpoint, '
      f'{layout.path(workdir, layout.CHECKPOINTS, str(good))}, is kept'
      if good is not None
      else 'no checkpoint had been saved'
    )
    raise Stopped(f'error: {e}: training stopped; {kept}', 3) from e
  finally:  # after an error: let the background save end, quietly
    tracer.stop()
    saver.wait(raise_errors=False)
    writer.close(raise_errors=False)
  if log.steady_images_per_sec:
    result['steady_images_per_sec'] = log.steady_images_per_sec
  result['step'] = int(jax.device_get(state.step))
  return result


def evaluate(exp: TrainingSetup, state, writer=None, step=None) -> dict:
  """The evaluator's metrics of the state's weights and, for a run that
  keeps a moving average, of the average's (logged as EVAL_ema, returned
  under 'ema')."""
  result = exp.evaluator(state)
  if writer is not None:
    writer.write(step, exp.evaluator.name, result)
  if state.ema is not None:
    averaged = exp.evaluator(train_state.with_weights(state, 'ema'))
    if writer is not None:
      writer.write(step, f'{exp.evaluator.name}_ema', averaged)
    result['ema'] = averaged
  return result


def _steps_in_call(
  done: int, total: int, every: dict, per_call: int, points=()
) -> int:
  """Steps the next call runs: `per_call` when no log, evaluation,
  checkpoint or one of `points` (the profiler's) falls inside them (they
  end exactly at one), else 1."""
  if per_call == 1 or done + per_call > total:
    return 1
  for interval in every.values():
    if (done // interval + 1) * interval < done + per_call:
      return 1
  if any(done < p < done + per_call for p in points):
    return 1
  return per_call
