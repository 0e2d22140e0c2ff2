"""Resuming a workdir safely: same experiment, newest readable checkpoint,
and a metrics log that reads as if the run had never stopped."""

import json
import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from resnet_jax import errors
from resnet_jax.config import data_names
from resnet_jax.errors import ConfigError
from resnet_jax.run import files
from resnet_jax.run import layout

# Keys added to the configs after runs were saved without them, with the
# value that reproduces those runs: an old workdir reads as if it had it
# (added_keys).
ADDED_KEYS = {  # flattened form
  'model.input_scale': (1.0, 1.0, 1.0),
  'model.bn_frozen': False,  # True for linear probes: added_keys
  'model.stem': 'standard',
  'optim.optimizer': 'sgd',
  'optim.label_smoothing': 0.0,
  'optim.clip_grad_norm': None,
  'optim.adam_b1': 0.9,
  'optim.adam_b2': 0.999,
  'optim.adam_eps': 1e-8,
  'optim.lars_trust_coefficient': 0.001,
  'data.train_split': 'train',
  'data.val_split': 'validation',
  'data.mixup_alpha': 0.0,
  'data.cutmix_alpha': 0.0,
  'data.mix_prob': 1.0,
  'data.mix_switch_prob': 0.5,
  'data.mix_lambda': 'example',  # mixing runs before it: added_keys
  'data.auto_augment': None,
  'data.rand_augment_ops': 2,
  'data.rand_augment_magnitude': 9,
  'data.random_erasing': 0.0,
  'train.ema_decay': None,
  'train.ema_warmup': False,
  'train.teacher': None,
  'train.teacher_weights': 'raw',
  'optim.distill_temperature': 20.0,
  'optim.distill_hard_weight': 0.5,
  'train.profile_steps': None,
  'train.mlflow': None,
}
NOT_IN_CIFAR = (  # image sets only: tfds splits, host augmentation
  'data.train_split',
  'data.val_split',
  'data.auto_augment',
  'data.rand_augment_ops',
  'data.rand_augment_magnitude',
  'data.random_erasing',
)

# Keys a resumed run may change without changing what is being trained.
SAFE_TO_CHANGE = frozenset(
  {
    'train.length',
    'train.log_every',
    'train.eval_every',
    'train.checkpoint_every',
    'train.keep_checkpoints',
    'train.eval_batch_size',
    'train.steps_per_dispatch',
    'model.remat',
    'data.eval_protocol',
    'data.eval_scales',
    'data.local_dir',
    'data.tfds_data_dir',
    'data.download',
    'data.image_folder',
    'data.manual_dir',
    'data.val_split',
    'train.profile_steps',
    'train.mlflow',
  }
)


def flatten(tree, prefix=''):
  """A nested dict -> {'a.b': value}, lists as tuples."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = (
        tuple(value) if isinstance(value, list) else value
      )
  return flat


def check_compatible(workdir: str, config) -> None:
  """Refuses to resume WORKDIR with a config that trains something else."""
  path = layout.path(workdir, layout.CONFIG)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = flatten(json.load(f))
  except (OSError, ValueError) as e:
    raise ConfigError(
      f'{path} is unreadable ({e}); move it away to start '
      'afresh or restore it to resume'
    ) from e
  saved.update(added_keys(saved))
  now = flatten(json.loads(config.to_json_best_effort()))
  changed = sorted(
    k
    for k in saved.keys() | now.keys()
    if k not in SAFE_TO_CHANGE and saved.get(k) != now.get(k)
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


def added_keys(flat_saved: dict) -> dict:
  """The ADDED_KEYS missing from a saved (flattened) config that its
  config file has now."""
  on_cifar = data_names.is_cifar(flat_saved.get('data.name'))
  added = {
    k: v
    for k, v in ADDED_KEYS.items()
    if k not in flat_saved and not (on_cifar and k in NOT_IN_CIFAR)
  }
  if 'model.bn_frozen' in added:  # linear probes always froze their BN
    probe = flat_saved.get('finetune.mode') == 'linear_probe'
    added['model.bn_frozen'] = probe
  if 'data.mix_lambda' in added:  # only a run that mixed drew per example
    mixed = flat_saved.get('data.mixup_alpha') or flat_saved.get(
      'data.cutmix_alpha'
    )
    added['data.mix_lambda'] = 'example' if mixed else 'batch'
  return added


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
