"""Where training metrics go: metrics.jsonl, TensorBoard and the terminal.

Only the first process writes; the others keep quiet.
"""

import json
import math
import os
import sys
import time

import jax
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2
import tqdm

from resnet_jax.errors import WriteFailed
from resnet_jax.errors import writing
from resnet_jax.run import layout


class MetricsWriter:
  """One JSON object per event in WORKDIR/metrics.jsonl (appended, so a
  resumed run continues the file), the same scalars in TensorBoard event
  files, and a progress bar on a terminal or plain lines elsewhere.

  Both files are written and flushed at each event, in this thread: a
  failed write (a full disk) raises errors.WriteFailed naming the file,
  never a traceback from a background thread."""

  def __init__(self, workdir: str, total_steps: int, start_step: int):
    self._chief = jax.process_index() == 0
    self._bar = None
    self._jsonl = self._tb = None
    if not self._chief:
      return
    self._jsonl_path = layout.path(workdir, layout.METRICS)
    tb_dir = layout.path(workdir, layout.TENSORBOARD)
    with writing(tb_dir, 'creating the TensorBoard log'):
      os.makedirs(tb_dir, exist_ok=True)
      self._tb = EventsWriter(os.path.join(tb_dir, 'events'))
      self._tb_path = self._tb._file_name  # the file being written
      self._tb.flush()
    with writing(self._jsonl_path, 'opening the metrics log'):
      self._jsonl = open(self._jsonl_path, 'a')
    if sys.stderr.isatty():
      self._bar = tqdm.tqdm(
        total=total_steps, initial=start_step, unit='step', dynamic_ncols=True
      )

  def write(self, step: int, kind: str, scalars: dict):
    """Records `scalars` (Python numbers) of event `kind` at `step`."""
    if not self._chief:
      return
    record = dict(step=step, kind=kind, time=time.time(), **scalars)
    with writing(self._jsonl_path, 'logging metrics'):
      self._jsonl.write(json.dumps(record) + '\n')
      self._jsonl.flush()
    with writing(self._tb_path, 'logging to TensorBoard'):
      for name, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          self._tb.write_event(
            event_pb2.Event(
              wall_time=record['time'],
              step=step,
              summary=summary.scalar(f'{kind}/{name}', value),
            )
          )
      self._tb.flush()
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
    """Closes the files (again: a no-op)."""
    if not self._chief:
      return
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    for name in ('_tb', '_jsonl'):
      handle, path = getattr(self, name), getattr(self, f'{name}_path', '')
      setattr(self, name, None)
      if handle is None:
        continue
      try:
        handle.close()
      except OSError as e:
        if raise_errors:
          raise WriteFailed(path, 'closing the metrics logs', e) from e


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
