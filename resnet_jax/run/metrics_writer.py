"""Where training metrics go: the sinks (metrics.jsonl, TensorBoard, and
MLflow where train.mlflow says) and the terminal.

Only the first process writes; the others keep quiet.
"""

import json
import math
import os
import sys
import time
from typing import Protocol

import jax
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2
import tqdm

from resnet_jax.errors import WriteFailed
from resnet_jax.errors import writing
from resnet_jax.run import layout


class Sink(Protocol):
  """Where the scalars of each event go: metrics.jsonl, TensorBoard, or a
  tracker of the user's (run/mlflow_sink.py). `write` is called on the
  first process only, in the training thread, once per event; a failed
  write raises errors.WriteFailed. `close` may be called twice; `ended`:
  whether the run ended (or stopped: preempted, failed)."""

  def write(self, step: int, kind: str, wall_time: float, scalars: dict): ...

  def close(self, ended: bool) -> None: ...


class JsonlSink:
  """One JSON object per event in WORKDIR/metrics.jsonl, appended (a
  resumed run continues the file, trimmed to its checkpoint first:
  run/resume.py) and flushed at each event."""

  def __init__(self, workdir: str):
    self.path = layout.path(workdir, layout.METRICS)
    with writing(self.path, 'opening the metrics log'):
      self._file = open(self.path, 'a')

  def write(self, step, kind, wall_time, scalars):
    record = dict(step=step, kind=kind, time=wall_time, **scalars)
    with writing(self.path, 'logging metrics'):
      self._file.write(json.dumps(record) + '\n')
      self._file.flush()

  def close(self, ended=True):
    handle, self._file = self._file, None
    if handle is not None:
      with writing(self.path, 'closing the metrics log'):
        handle.close()


class TensorBoardSink:
  """The finite scalars as KIND/NAME in TensorBoard event files under
  WORKDIR/tensorboard/, flushed at each event."""

  def __init__(self, workdir: str):
    directory = layout.path(workdir, layout.TENSORBOARD)
    with writing(directory, 'creating the TensorBoard log'):
      os.makedirs(directory, exist_ok=True)
      self._events = EventsWriter(os.path.join(directory, 'events'))
      self.path = self._events._file_name  # the file being written
      self._events.flush()

  def write(self, step, kind, wall_time, scalars):
    with writing(self.path, 'logging to TensorBoard'):
      for name, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          self._events.write_event(
            event_pb2.Event(
              wall_time=wall_time,
              step=step,
              summary=summary.scalar(f'{kind}/{name}', value),
            )
          )
      self._events.flush()

  def close(self, ended=True):
    handle, self._events = self._events, None
    if handle is not None:
      with writing(self.path, 'closing the TensorBoard log'):
        handle.close()


class MetricsWriter:
  """Each event's scalars to every sink (metrics.jsonl and TensorBoard,
  then `extra`, e.g. MLflow), and a progress bar on a terminal or plain
  lines elsewhere. Only the first process writes; the others keep quiet.

  Every sink writes in this thread: a failed write (a full disk) raises
  errors.WriteFailed naming the file, never a traceback from a
  background thread. `extra`: a callable that returns the further sinks
  (called on the first process only)."""

  def __init__(
    self, workdir: str, total_steps: int, start_step: int, extra=None
  ):
    self._chief = jax.process_index() == 0
    self._bar = None
    self._sinks = []
    if not self._chief:
      return
    self._sinks = [TensorBoardSink(workdir), JsonlSink(workdir)]
    if extra is not None:
      self._sinks += extra()
    if sys.stderr.isatty():
      self._bar = tqdm.tqdm(
        total=total_steps, initial=start_step, unit='step', dynamic_ncols=True
      )

  def write(self, step: int, kind: str, scalars: dict):
    """Records `scalars` (Python numbers) of event `kind` at `step`."""
    if not self._chief:
      return
    wall_time = time.time()
    for sink in self._sinks:
      sink.write(step, kind, wall_time, scalars)
    shown = ', '.join(f'{k}={_fmt(v)}' for k, v in scalars.items())
    if self._bar is not None:
      if kind == 'train':
        self._bar.set_postfix_str(shown, refresh=False)
        self._bar.update(step - self._bar.n)
      else:
        self._bar.write(f'step {step} {kind}: {shown}')
    else:
      print(f'step {step} {kind}: {shown}', file=sys.stderr, flush=True)

  def close(self, raise_errors: bool = True):
    """Closes every sink (again: a no-op). `raise_errors=False`: after an
    error, when the run stopped before its end."""
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    sinks, self._sinks = self._sinks, []
    failed = None
    for sink in sinks:  # every one, even after one fails
      try:
        sink.close(ended=raise_errors)
      except WriteFailed as e:
        failed = failed or e
    if failed is not None and raise_errors:
      raise failed


def _fmt(value):
  return f'{value:.4g}' if isinstance(value, float) else str(value)


class TrainLog:
  """Training metrics on their way to the writer: fetched from the device
  one step late (so the host never waits on the step it just launched),
  checked for NaN/Inf, and timed, compilation and evaluation excluded."""

  def __init__(self, writer: MetricsWriter, batch_size: int, start: int):
    self._writer = writer
    self._batch = batch_size
    self._start = start
    self._pending = None  # (step, metrics on the device)
    self._last_step, self._last_time = start, time.perf_counter()
    self._steady_steps, self._steady_seconds = 0, 0.0

  def add(self, step: int, metrics):
    self._pending = (step, metrics)

  def flush(self):
    """Fetches, checks and writes the pending metrics, if any."""
    if self._pending is None:
      return
    step, metrics = self._pending
    self._pending = None
    scalars = fetch_and_check(step, metrics)
    now = time.perf_counter()
    seconds, steps = now - self._last_time, step - self._last_step
    scalars['images_per_sec'] = steps * self._batch / seconds
    if self._last_step > self._start:  # the first interval compiles
      self._steady_steps += steps
      self._steady_seconds += seconds
    self._last_step, self._last_time = step, now
    self._writer.write(step, 'train', scalars)

  def pause_ended(self):
    """Restarts the clock after work that is not training (evaluation)."""
    self._last_time = time.perf_counter()

  @property
  def steady_images_per_sec(self) -> float | None:
    if not self._steady_steps:
      return None
    return self._steady_steps * self._batch / self._steady_seconds


def fetch_and_check(step: int, metrics) -> dict:
  """Device metrics -> Python floats; FloatingPointError if any is NaN/Inf."""
  scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
  scalars['grad_norm'] = scalars.pop('grad_norm_sq') ** 0.5
  bad = [k for k, v in scalars.items() if not math.isfinite(v)]
  if bad:
    raise FloatingPointError(f'non-finite {" and ".join(bad)} at step {step}')
  return scalars
