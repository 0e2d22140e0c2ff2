"""A profiler trace of chosen training steps, on request
(train.profile_steps), as the flax ImageNet example offers.

The trace goes to WORKDIR/tensorboard/plugins/profile/<time>/: TensorBoard's
profile plugin shows it beside the run's scalars (`tensorboard
--logdir=WORKDIR/tensorboard`), and its perfetto_trace.json.gz opens in
ui.perfetto.dev. Each process of a multi-host job writes its own host's.
"""

from absl import logging
import jax

from resnet_jax import errors
from resnet_jax.run import layout


class StepTracer:
  """Traces the steps after `first` up to `end` (both counted in steps
  done, so (10, 13) traces steps 11, 12 and 13): started once `first`
  steps are done, stopped once `end` are, with the devices' work
  finished. A run that resumes past `first` traces nothing."""

  def __init__(self, workdir: str, steps, start: int):
    self._dir = layout.path(workdir, layout.TENSORBOARD)
    self._first, self._end = steps if steps else (None, None)
    self._wanted = steps is not None and start <= self._first
    self._active = False

  @property
  def points(self) -> tuple[int, ...]:
    """Steps a call of several steps must end at."""
    return (self._first, self._end) if self._wanted else ()

  def after(self, done: int, state) -> None:
    """Called after each call of the step, `done` steps done."""
    if self._active and done >= self._end:
      self.stop(state)
    elif self._wanted and done == self._first:
      jax.block_until_ready(state)  # earlier steps stay out of the trace
      with errors.writing(self._dir, 'starting the profiler trace'):
        jax.profiler.start_trace(self._dir, create_perfetto_trace=True)
      self._active, self._wanted = True, False
      logging.info('tracing steps %d-%d', self._first + 1, self._end)

  def stop(self, state=None) -> None:
    if not self._active:
      return
    self._active = False
    if state is not None:
      jax.block_until_ready(state)
    with errors.writing(self._dir, 'writing the profiler trace'):
      jax.profiler.stop_trace()
    logging.info('profiler trace written under %s', self._dir)
