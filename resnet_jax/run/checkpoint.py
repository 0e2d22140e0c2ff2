"""Orbax checkpoints of the TrainState under WORKDIR/checkpoints."""

import contextlib
import errno
import logging
import os
import shutil

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import type_handlers

from resnet_jax.errors import WriteFailed
from resnet_jax.run import layout


def manager(
  workdir: str, keep: int, read_only: bool = False
) -> ocp.CheckpointManager:
  """The run's manager keeps the last `keep` checkpoints, saved
  asynchronously (training goes on while the files are written), and
  clears what a killed save left half-written: it holds the workdir
  (run_lock). A reader's (evaluate, predict, a run being fine-tuned from)
  changes nothing, so it may read while a run trains."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=None if read_only else keep,
    save_interval_steps=0 if read_only else 1,  # the caller says when
    enable_async_checkpointing=not read_only,
    create=not read_only,
    read_only=read_only,
    cleanup_tmp_directories=not read_only,
  )
  _write_each_array_whole()
  directory = layout.path(os.path.abspath(workdir), layout.CHECKPOINTS)
  for attempt in range(READ_ATTEMPTS):
    try:
      # Orbax warns on every read-only manager; reading a run's
      # checkpoints is this project's normal case.
      with _quiet('Given directory is read only'):
        return ocp.CheckpointManager(directory, options=options)
    except FileNotFoundError:
      # A reader lists the steps, then reads each one's time: a run
      # training there may delete its oldest checkpoint in between.
      if not read_only or attempt == READ_ATTEMPTS - 1:
        raise


READ_ATTEMPTS = 5


_WHOLE_ARRAYS = type_handlers.ArrayHandler(use_replica_parallel=False)


def _write_each_array_whole():
  """Orbax saves a jax.Array whole, from its first replica, not in slices
  written by every replica ("replica parallel"). Orbax already does so
  where JAX_PLATFORMS names a GPU; on the CPU, and on a GPU where that
  variable is unset, it slices every replicated array before writing, and
  each new shape compiles its slice. A ResNet's state is a few hundred MB
  and replicated: slicing it costs more than writing it, about 0.5 s a
  checkpoint of a ResNet-8 on 8 CPU devices. The same arrays on disk,
  restored the same way. Orbax keeps this choice process-wide, for every
  jax.Array; it is made once, and Orbax's warning that it was made is
  dropped."""
  if type_handlers.get_type_handler(jax.Array) is _WHOLE_ARRAYS:
    return
  with _quiet('Type handler registry type'):
    type_handlers.register_type_handler(jax.Array, _WHOLE_ARRAYS, override=True)


class _DropNotice(logging.Filter):
  def __init__(self, prefix: str):
    super().__init__()
    self.prefix = prefix

  def filter(self, record):
    return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _quiet(prefix: str):
  """Drops absl's log lines that start with `prefix` meanwhile (absl logs
  through the standard logger 'absl')."""
  notice = _DropNotice(prefix)
  logger = logging.getLogger('absl')
  logger.addFilter(notice)
  try:
    yield
  finally:
    logger.removeFilter(notice)


class Saver:
  """Saves `state` as `step` (known on the host: no device sync) in the
  background; the caller decides when (Orbax's own interval would also
  save the first step it sees). A save that fails (a full disk) raises
  errors.WriteFailed naming its checkpoint, at the next save or wait."""

  def __init__(self, mgr: ocp.CheckpointManager):
    self.manager = mgr
    self._pending = None  # the step being written in the background

  def _path(self, step: int) -> str:
    return os.path.join(str(self.manager.directory), str(step))

  def save(self, step: int, state):
    self.wait()  # the previous save's failure is the previous one's
    self._check_space(step, state)
    try:
      self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:  # the write's own error, whatever its type
      raise WriteFailed(self._path(step), 'saving a checkpoint', e) from e
    self._pending = step

  def _check_space(self, step: int, state):
    """Refuses a save that cannot fit, before anything is written: a full
    disk is found here, not half-way through Orbax's writes."""
    needed = sum(x.nbytes for x in jax.tree.leaves(state))
    directory = str(self.manager.directory)
    free = shutil.disk_usage(directory).free
    if free < needed:
      raise WriteFailed(
        self._path(step),
        'saving a checkpoint',
        OSError(
          errno.ENOSPC,
          f'No space left on device: {free / 1e6:.1f} MB free, a checkpoint '
          f'takes up to {needed / 1e6:.1f} MB',
        ),
      )

  def wait(self, raise_errors: bool = True):
    """Blocks until the background save is finalised."""
    step, self._pending = self._pending, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      if raise_errors:
        path = self._path(step) if step is not None else 'a checkpoint'
        raise WriteFailed(path, 'saving a checkpoint', e) from e
