"""Orbax checkpoints of the TrainState under WORKDIR/checkpoints."""

import os

import orbax.checkpoint as ocp


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the last `keep` checkpoints, saved asynchronously: training goes
  on while the files are written."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, enable_async_checkpointing=True, create=True
  )
  return ocp.CheckpointManager(
    os.path.join(os.path.abspath(workdir), 'checkpoints'), options=options
  )


def save(mgr: ocp.CheckpointManager, step: int, state):
  """Saves `state` as `step` (known on the host: no device sync); the write
  finishes in the background. The caller decides when (Orbax's own
  interval would also save the first step it sees)."""
  mgr.save(step, args=ocp.args.StandardSave(state), force=True)
