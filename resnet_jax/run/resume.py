"""Resuming a workdir safely: same experiment, newest readable checkpoint,
and a metrics log that reads as if the run had never stopped."""

import json
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from resnet_jax import errors
from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.run import files
from resnet_jax.run import layout


def check_compatible(workdir: str, config) -> None:
  """Refuses to resume WORKDIR with a config that trains something else."""
  path = layout.path(workdir, layout.CONFIG)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = keys.flatten(json.load(f))
  except (OSError, ValueError) as e:
    raise ConfigError(
      f'{path} is unreadable ({e}); move it away to start '
      'afresh or restore it to resume'
    ) from e
  saved.update(keys.older_values(saved))
  now = keys.flatten(json.loads(config.to_json_best_effort()))
  changed = sorted(
    k
    for k in saved.keys() | now.keys()
    if not keys.resumable(k) and saved.get(k) != now.get(k)
  )
  if changed:
    shown = '; '.join(
      f'{k}: {saved.get(k)!r} in {path}, {now.get(k)!r} now'
      for k in changed[:3]
    )
    more = f' (and {len(changed) - 3} more)' if len(changed) > 3 else ''
    raise ConfigError(
      f'cannot resume {workdir} with another experiment: '
      f'{shown}{more}; use a new --workdir'
    )


def restore_newest_readable(
  mgr: ocp.CheckpointManager,
  abstract_state,
  directory: str,
  move_damaged: bool = True,
):
  """The newest checkpoint that restores, skipping damaged ones by name.

  Checkpoints interrupted mid-write never count: Orbax finalises them by
  renaming a temporary folder. Damaged ones newer than the one restored
  are renamed STEP.damaged (kept for inspection, out of the way of the
  steps about to be saved again) when `move_damaged`: the run that holds
  the workdir does so; readers (evaluate, predict) change nothing, as one
  they skip may be an old checkpoint the training run is deleting.
  Returns None if there are no checkpoints; raises ConfigError if there
  are some but none can be read, rather than start from scratch over them.
  """
  damaged = []
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      state = mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # any damage: missing, truncated, garbled files
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      path = os.path.join(directory, str(step))
      logging.warning('checkpoint %s is damaged and skipped: %s', path, reason)
      damaged.append((path, reason))
      continue
    if damaged and move_damaged:
      _move_aside([path for path, _ in damaged])
      mgr.reload()
    return state
  if damaged:
    shown = '; '.join(f'{p} ({r})' for p, r in damaged[:2])
    raise ConfigError(
      f'no readable checkpoint among {len(damaged)} in {directory}: {shown}; '
      'refusing to train from scratch over them (move them away to start '
      'afresh)'
    )
  return None


def _move_aside(paths):
  if jax.process_index() == 0:
    for path in paths:
      target = path + '.damaged'
      while os.path.exists(target):
        target += '_'
      os.rename(path, target)
      logging.warning('moved the damaged checkpoint to %s', target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('resnet_jax:move_damaged')


def truncate_metrics(workdir: str, step: int) -> None:
  """Drops metrics.jsonl records after `step`: the resumed run logs those
  steps again, so the file reads as one uninterrupted run."""
  path = layout.path(workdir, layout.METRICS)
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      if json.loads(line)['step'] <= step:
        kept.append(line)
    except (ValueError, KeyError):  # a line cut short by the kill
      continue
  if len(kept) != len(lines):
    with errors.writing(path, 'rewriting the metrics log'):
      files.replace(path, ''.join(kept))  # never a half-written log


def mesh_shape(mesh) -> dict:
  """What a run trains on: processes, this process's devices, all devices."""
  return dict(
    processes=jax.process_count(),
    local_devices=len(mesh.local_devices),
    devices=mesh.size,
  )


def _shape_text(shape: dict) -> str:
  return (
    f'{shape["devices"]} devices ({shape["processes"]} processes x '
    f'{shape["local_devices"]})'
  )


def say_shape(workdir: str, config, shape: dict):
  """One line where a run resumes on another shape than it last trained
  on (WORKDIR/devices.json): what stays the same, or what the new device
  count changes (per-device BN groups). A batch that no longer divides
  over the devices is refused earlier, by the loop's setup."""
  saved = files.read_json(layout.path(workdir, layout.DEVICES))
  if not saved or saved == shape:
    return
  was, now = _shape_text(saved), _shape_text(shape)
  if saved['devices'] != shape['devices'] and not config.train.bn_sync:
    batch = config.train.batch_size
    logging.warning(
      'resuming %s on %s where it trained on %s: per-device BN statistics '
      '(train.bn_sync=False) now come from %d examples a device, not %d, so '
      "the steps from here differ from an uninterrupted run's",
      workdir,
      now,
      was,
      batch // shape['devices'],
      batch // saved['devices'],
    )
  else:
    logging.warning(
      'resuming %s on %s where it trained on %s: the same global batch '
      'and BN groups, so the same steps up to the order of cross-device sums',
      workdir,
      now,
      was,
    )
