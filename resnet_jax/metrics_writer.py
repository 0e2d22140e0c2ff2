"""Where training metrics go: metrics.jsonl, TensorBoard and the terminal.

Only the first process writes; the others keep quiet.
"""

import json
import math
import os
import sys
import time

import jax
from tensorboardX import SummaryWriter
import tqdm


class MetricsWriter:
  """One JSON object per event in WORKDIR/metrics.jsonl (appended, so a
  resumed run continues the file), the same scalars in TensorBoard event
  files, and a progress bar on a terminal or plain lines elsewhere."""

  def __init__(self, workdir: str, total_steps: int, start_step: int):
    self._chief = jax.process_index() == 0
    self._bar = None
    if not self._chief:
      return
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    if sys.stderr.isatty():
      self._bar = tqdm.tqdm(
        total=total_steps, initial=start_step, unit='step', dynamic_ncols=True
      )

  def write(self, step: int, kind: str, scalars: dict):
    """Records `scalars` (Python numbers) of event `kind` at `step`."""
    if not self._chief:
      return
    record = dict(step=step, kind=kind, time=time.time(), **scalars)
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for name, value in scalars.items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(f'{kind}/{name}', value, step)
    shown = ', '.join(f'{k}={_fmt(v)}' for k, v in scalars.items())
    if self._bar is not None:
      if kind == 'train':
        self._bar.set_postfix_str(shown, refresh=False)
        self._bar.update(step - self._bar.n)
      else:
        self._bar.write(f'step {step} {kind}: {shown}')
    else:
      print(f'step {step} {kind}: {shown}', file=sys.stderr, flush=True)

  def close(self):
    if not self._chief:
      return
    if self._bar is not None:
      self._bar.close()
    self._tb.close()
    self._jsonl.close()


def _fmt(value):
  return f'{value:.4g}' if isinstance(value, float) else str(value)
