"""Stopping cleanly on SIGTERM or SIGINT: save at the current step, exit.

One process: our own signal handlers raise a flag that the loop reads each
step. Several processes: JAX's preemption service (which catches SIGTERM
on any host) makes every process agree on the step to save at, through
Orbax's `reached_preemption`. A scheduler's own warning (SLURM's USR2
before a time limit, launch/slurm.py) asks the same through `request`.
"""

import signal
import threading

import jax

_requested = []  # signal names asked for by `request`, this process


def request(signal_name: str):
  """Asks this process's training loop (the running one, or the next) to
  save at its current step and stop, as SIGTERM does. Several processes
  agree on the step through SIGTERM and JAX's service; this names the
  signal they stop for."""
  _requested.append(signal_name)


class Watcher:
  """A context manager; `requested(step, mgr)` says when to stop."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  def __enter__(self):
    # With several processes JAX's own handler catches SIGTERM and tells
    # every process; a Python handler here would replace it.
    if (
      jax.process_count() == 1
      and threading.current_thread() is threading.main_thread()
    ):
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    _requested.clear()  # answered: this loop saved and stopped, or ended
    return False

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def requested(self, step: int, mgr) -> bool:
    if jax.process_count() > 1:
      if mgr.reached_preemption(step):
        asked = _requested[0] if _requested else 'SIGTERM'
        self.signal_name = self.signal_name or asked
        return True
      return False
    if _requested and self.signal_name is None:
      self.signal_name = _requested[0]
    return self.signal_name is not None

  @property
  def exit_code(self) -> int:
    """128 + the signal number, as a shell reports a signalled program, so
    schedulers that restart failed jobs restart this one."""
    return 128 + int(getattr(signal, self.signal_name or 'SIGTERM'))
