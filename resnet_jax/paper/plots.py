"""The paper's figures from an experiment's runs, as PNG files.

curves: Figure 6's style. One panel per family (plain nets, ResNets, or
one per shortcut option when an experiment compares them; one for an
ablation of a single network's recipe, a line per run); per network a
dashed line for the training error and a bold line for the test (or
validation) error, against iterations in units of 1e4. The training error
is of the augmented training batches the loop logged, averaged over
consecutive log points (the paper's curves are smoothed too); with several
seeds, each curve is their mean.

responses: Figure 7's style. The std of each 3x3 layer's response
(resnet_jax/paper/responses.py) by layer index, and the same sorted by
magnitude, one line per network.
"""

import json
import os

from matplotlib.figure import Figure
import numpy as np

from resnet_jax.config import arguments
from resnet_jax.paper import responses as responses_lib
from resnet_jax.run import layout

# Train-error points averaged into one plotted point.
_POINTS = 60


def _label(config) -> str:
  m = config.model
  name = 'ResNet' if m.residual else 'plain'
  return f'{name}-{m.depth}'


def _panel(config, shortcuts: set) -> str:
  m = config.model
  if not m.residual:
    return 'plain'
  return f'ResNet, option {m.shortcut}' if len(shortcuts) > 1 else 'ResNet'


def read_metrics(workdir: str) -> dict:
  """{'train': {step: error %}, 'eval': {step: error %}, 'eval_name'}
  from WORKDIR/metrics.jsonl (the last record of a step wins: a resumed
  run repeats a few)."""
  train, evaluation, eval_name = {}, {}, None
  path = layout.path(workdir, layout.METRICS)
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        if record['kind'] == 'train':
          train[record['step']] = 100 * record['error']
        elif 'top1_error' in record:
          evaluation[record['step']] = 100 * record['top1_error']
          eval_name = record['kind']
  return dict(train=train, eval=evaluation, eval_name=eval_name)


def _mean_over_seeds(curves: list[dict]) -> tuple[np.ndarray, np.ndarray]:
  """Steps every seed logged, and the mean value there."""
  common = sorted(set.intersection(*(set(c) for c in curves)))
  values = np.array([[c[s] for s in common] for c in curves]).mean(0)
  return np.array(common, np.float64), values


def _smooth(steps, values):
  """Means over consecutive groups: about _POINTS points in all."""
  group = max(1, len(steps) // _POINTS)
  n = len(steps) // group * group
  if n == 0:
    return steps, values
  return (
    steps[:n].reshape(-1, group).mean(1),
    values[:n].reshape(-1, group).mean(1),
  )


def _runs(experiment, root: str, seeds: int):
  """(run, config, [workdirs of its seeds that have a metrics file])."""
  for run in experiment.runs:
    workdirs = [
      os.path.join(root, run.name, f'seed{seed}') for seed in range(seeds)
    ]
    workdirs = [
      w for w in workdirs if os.path.exists(layout.path(w, layout.METRICS))
    ]
    yield run, arguments.load(run.config), workdirs


def curves(experiment, root: str, seeds: int, path: str) -> str | None:
  """Figure 6's plot of the runs under `root`; None if none has logged."""
  found = [r for r in _runs(experiment, root, seeds) if r[2]]
  if not found:
    return None
  shortcuts = {c.model.shortcut for _, c, _ in found if c.model.residual}
  # An ablation of one network's recipe (Bag of Tricks): one panel, a
  # line per run, named after the run.
  by_run = len({_label(c) for _, c, _ in found}) == 1 and len(found) > 1

  def panel_of(config):
    return _label(config) if by_run else _panel(config, shortcuts)

  panels = []
  for _, config, _ in found:
    if panel_of(config) not in panels:
      panels.append(panel_of(config))
  fig = Figure(figsize=(5.5 * len(panels), 4.2))
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  used = {}  # panel -> lines drawn: each line its own colour
  eval_name = 'test'
  top = 20.0  # the paper's axis; raised when the errors are higher
  for run, config, workdirs in found:
    panel = panel_of(config)
    ax = axes[panels.index(panel)]
    colour = f'C{used.setdefault(panel, 0) % 10}'
    used[panel] += 1
    metrics = [read_metrics(w) for w in workdirs]
    label = run.name if by_run else _label(config)
    if all(m['train'] for m in metrics):
      steps, values = _smooth(*_mean_over_seeds([m['train'] for m in metrics]))
      ax.plot(steps / 1e4, values, '--', color=colour, lw=1)
      top = max(top, float(np.max(values)))
    if all(m['eval'] for m in metrics):
      steps, values = _mean_over_seeds([m['eval'] for m in metrics])
      ax.plot(steps / 1e4, values, '-', color=colour, lw=2.2, label=label)
      top = max(top, float(np.max(values)))
      eval_name = metrics[0]['eval_name']
  for ax, title in zip(axes, panels):
    ax.set_title(title)
    ax.set_xlabel('iter. (1e4)')
    ax.set_ylabel('error (%)')
    ax.set_ylim(0, min(100.0, top * 1.05))
    ax.grid(alpha=0.3)
    ax.legend(loc='upper right', fontsize='small')
  fig.suptitle(
    f'{experiment.description}\ndashed: training error, bold: '
    f'{eval_name} error',
    fontsize='medium',
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def responses(experiment, root: str, seeds: int, path: str) -> str | None:
  """Figure 7's plot from each run's responses.json (seed 0 of each run
  that has one); None if none has."""
  lines = []
  for run, config, _ in _runs(experiment, root, seeds):
    file = os.path.join(root, run.name, 'seed0', responses_lib.FILE)
    if os.path.exists(file):
      with open(file) as f:
        lines.append((_label(config), config.model.residual, json.load(f)))
  if not lines:
    return None
  fig = Figure(figsize=(6.5, 6.5))
  by_index, by_size = fig.subplots(2, 1)
  for i, (label, residual, found) in enumerate(lines):
    std = np.array(found['std'])
    style = dict(
      color=f'C{i}', lw=1.5, ls='-' if residual else '--', label=label
    )
    layers = np.arange(1, len(std) + 1)
    by_index.plot(layers, std, **style)
    by_size.plot(layers, np.sort(std)[::-1], **style)
  by_index.set_xlabel('layer index (original)')
  by_size.set_xlabel('layer index (sorted by magnitude)')
  for ax in (by_index, by_size):
    ax.set_ylabel('std')
    ax.grid(alpha=0.3)
    ax.legend(fontsize='small')
  split = lines[0][2]['split']
  fig.suptitle(
    "std of each 3x3 layer's response (after BN, before ReLU/addition), "
    f'{split} images',
    fontsize='medium',
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path
