"""One command per experiment of the paper: its runs per seed, each in its
own workdir, finished ones skipped; the ledger, plots and responses."""

import ast
import csv
import dataclasses
import io
import json
import os
import shlex
import statistics
import sys

from resnet_jax.config import arguments
from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.launch.task import Task
from resnet_jax.launch.task import as_json
from resnet_jax.launch.task import fingerprint
from resnet_jax.launch.task import last_step
from resnet_jax.launch.task import outcome
from resnet_jax.launch.task import planned_config
from resnet_jax.launch.task import read_failure
from resnet_jax.launch.task import run_task
from resnet_jax.model import counting
from resnet_jax.model import resnet
from resnet_jax.paper import experiments
from resnet_jax.paper import plots
from resnet_jax.paper import responses
from resnet_jax.run import files
from resnet_jax.run import layout


def apply_overrides(config, overrides):
  """KEY=VALUE strings onto the config, each value parsed as a Python
  literal where it is one (numbers, tuples, booleans), else a string."""
  for item in overrides:
    key, sep, text = item.partition('=')
    if not sep:
      raise ConfigError(f'--set={item}: expected KEY=VALUE')
    *parents, leaf = key.split('.')
    node = config
    for name in parents:
      if name not in node:
        raise ConfigError(f'--set={item}: unknown config key {key!r}')
      node = node[name]
    if leaf not in node:
      raise ConfigError(f'--set={item}: unknown config key {key!r}')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f'--set={item}: {e}') from e
  return config


def scale_durations(config, scale: float):
  """Every duration times `scale`, in the config's own unit (steps are
  rounded and kept at least 1)."""
  if not 0 < scale <= 1:
    raise ConfigError(f'--steps_scale={scale} must be in (0, 1]')
  if scale == 1:
    return config
  t, o = config.train, config.optim

  def scaled(value):
    v = value * scale
    return max(1, round(v)) if t.unit == 'steps' else v

  t.length = scaled(t.length)
  for key in ('log_every', 'eval_every', 'checkpoint_every'):
    t[key] = scaled(t[key])
  o.lr_boundaries = tuple(scaled(b) for b in o.lr_boundaries)
  if o.warmup_steps:
    o.warmup_steps = scaled(o.warmup_steps)
  return config


def run_config(run: experiments.PlannedRun, seed: int, overrides, scale: float):
  """The run's config: the file's, the command's --set overrides, the
  run's own, durations scaled, the seed; every numeric key checked."""
  config = arguments.load(run.config)
  apply_overrides(config, overrides)
  apply_overrides(config, run.overrides)
  scale_durations(config, scale)
  config.train.seed = seed
  keys.check(config)  # a sweep's typo refused before any run starts
  return config


def command(run, config, workdir: str) -> str:
  """The command line that trains this run (from any folder): the config
  and every key whose value differs from the file's."""
  base = keys.flatten(arguments.load(run.config).to_dict())
  changed = [
    f'--config.{k}={",".join(map(str, v)) if isinstance(v, tuple) else v}'
    for k, v in keys.flatten(config.to_dict()).items()
    if base.get(k) != v
  ]
  args = [f'--config={run.config}', *changed, f'--workdir={workdir}']
  return ' '.join(['python -m resnet_jax.train', *map(shlex.quote, args)])


def ledger(experiment: experiments.Experiment, root: str, seeds: int) -> list:
  """One row per run: its network, the paper's error and ours over the
  seeds that have finished; `failures`, the seeds that failed, each with
  its one-line error and log."""
  rows = []
  for run in experiment.runs:
    done, failures, unfinished_seeds = [], [], []
    for seed in range(seeds):
      workdir = os.path.join(root, run.name, f'seed{seed}')
      path = layout.path(workdir, layout.RESULT)
      if os.path.exists(path):
        with open(path) as f:
          done.append(json.load(f))
      elif (failure := read_failure(workdir)) is not None:
        failures.append(
          f'seed {seed}: {failure["error"]} (log: {failure["log"]})'
        )
      else:  # queued, training, stopped or never started
        step = last_step(workdir)
        where = 'not started' if step is None else f'at step {step}'
        teacher = run.teacher and os.path.join(root, run.teacher, f'seed{seed}')
        if step is None and teacher and read_failure(teacher):
          where += f': its teacher {run.teacher} seed {seed} failed'
        unfinished_seeds.append(f'seed {seed}: {where}')
    config = apply_overrides(arguments.load(run.config), run.overrides)
    model = resnet.build(config.model, config.data.num_classes)
    errors_ = [r['error'] for r in done]
    rows.append(
      dict(
        model=run.name,
        shortcut=config.model.shortcut or 'none (plain)',
        params=counting.count(model, config.data.image_size)['params'],
        paper_error=run.paper_error,
        error_mean=statistics.fmean(errors_) if errors_ else None,
        error_std=statistics.stdev(errors_) if len(errors_) > 1 else None,
        seeds=len(done),
        steps=done[0]['steps'] if done else None,
        wall_clock_s=sum(r['wall_clock_s'] for r in done) if done else None,
        # A run's requeues are slices of it; results from before slices
        # were counted are one each.
        slices=sum(r.get('slices', 1) for r in done),
        device=done[0]['device'] if done else None,
        commit=done[0]['commit'] if done else None,
        failed=len(failures),
        failures='; '.join(failures),
        unfinished='; '.join(unfinished_seeds),
      )
    )
  return rows


def markdown(rows) -> str:
  """The ledger as a table, then a line for each failed run."""
  head = (
    '| model | shortcut | params | paper error % | our error % | seeds '
    '| steps | wall-clock | device | commit |\n'
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |'
  )
  lines = [head]
  for r in rows:
    ours = '' if r['error_mean'] is None else f'{r["error_mean"]:.2f}'
    if r.get('failed') and r['error_mean'] is None:
      ours = 'failed'
    elif r.get('unfinished') and r['error_mean'] is None:
      ours = 'unfinished'
    if r['error_std'] is not None:
      ours += f' +- {r["error_std"]:.2f}'
    paper = '' if r['paper_error'] is None else f'{r["paper_error"]:.2f}'
    wall = '' if r['wall_clock_s'] is None else f'{r["wall_clock_s"]:.0f} s'
    if r.get('slices', 0) > r['seeds']:
      wall += f' in {r["slices"]} slices'
    lines.append(
      f'| {r["model"]} | {r["shortcut"]} | {r["params"]:,} | {paper} '
      f'| {ours} | {r["seeds"]} | {r["steps"] or ""} | {wall} '
      f'| {r["device"] or ""} | {r["commit"] or ""} |'
    )
  failed = [r for r in rows if r.get('failed')]
  unfinished_rows = [r for r in rows if r.get('unfinished')]
  if failed or unfinished_rows:
    lines.append('')
  lines += [f'- {r["model"]} failed, {r["failures"]}' for r in failed]
  lines += [
    f'- {r["model"]} unfinished, {r["unfinished"]}' for r in unfinished_rows
  ]
  return '\n'.join(lines) + '\n'


def write_ledger(rows, root: str):
  table = io.StringIO(newline='')
  writer = csv.DictWriter(table, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  files.replace(os.path.join(root, 'ledger.csv'), table.getvalue())
  files.replace(os.path.join(root, 'ledger.md'), markdown(rows))


def select(experiment, names):
  """The experiment with only the named runs (all when `names` is empty),
  in the experiment's order."""
  if not names:
    return experiment
  known = [run.name for run in experiment.runs]
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise ConfigError(
      f'--runs: {", ".join(unknown)} not in this experiment; its runs: '
      + ', '.join(known)
    )
  return dataclasses.replace(
    experiment, runs=tuple(r for r in experiment.runs if r.name in names)
  )


def plan_runs(
  experiment, root: str, seeds: int, overrides, scale: float
) -> list[Task]:
  """A Task (run, seed, config, workdir) for each run and seed: every
  config built, and so checked, before any run starts. A run with a
  teacher run distils from that run's workdir of the same seed, unless
  the overrides name a teacher."""
  names = {run.name for run in experiment.runs}
  plan = []
  for run in experiment.runs:
    for seed in range(seeds):
      config = run_config(run, seed, overrides, scale)
      if run.teacher is not None and not config.train.teacher:
        if run.teacher not in names:
          raise ConfigError(
            f'{run.name}: its teacher {run.teacher!r} is not a run of this '
            'plan: add it to --runs, or give --set=train.teacher=DIR'
          )
        config.train.teacher = os.path.join(root, run.teacher, f'seed{seed}')
      workdir = os.path.join(root, run.name, f'seed{seed}')
      plan.append(Task(run, seed, config, workdir))
  return plan


# What a run leaves in its folder once it has started (or ended).
STARTED = (
  layout.CONFIG,
  layout.METRICS,
  layout.CHECKPOINTS,
  layout.RESULT,
  layout.FAILURE,
)


def _saved_config(workdir: str, submitted) -> dict | None:
  """What a run folder was planned with (planned.json), where its run has
  started or been submitted (a plan that never ran binds nothing); for a
  folder from before planned.json, the config its run wrote (config.json)."""
  planned = files.read_json(layout.path(workdir, layout.PLANNED))
  if planned is not None:
    started = workdir in submitted or any(
      os.path.exists(layout.path(workdir, name)) for name in STARTED
    )
    return planned['config'] if started else None
  written = files.read_json(layout.path(workdir, layout.CONFIG))
  return as_json(keys.flatten(written)) if written is not None else None


def check_planned(
  plan, retrain: bool = False, submitted=frozenset(), queued=frozenset()
) -> list:
  """Each run folder belongs to one config. A folder whose run started,
  ended or was `submitted` (to SLURM) with another config than the plan's
  is refused in one line naming the run and the first key that differs,
  or with `retrain` moved aside to WORKDIR.replaced[N] (a run still
  `queued` is refused: cancel it first). Then records the plan's config in
  each folder (planned.json). Returns the workdirs moved aside."""
  moved = []
  planned = {task.workdir: planned_config(task.config) for task in plan}
  for task in plan:
    now = planned[task.workdir]
    saved = _saved_config(task.workdir, submitted)
    if saved is not None and saved != now:
      key = next(
        k
        for k in sorted(saved.keys() | now.keys())
        if saved.get(k) != now.get(k)
      )
      differs = sum(
        saved.get(k) != now.get(k) for k in saved.keys() | now.keys()
      )
      more = f' (and {differs - 1} more keys)' if differs > 1 else ''
      what = f'{key}: {saved.get(key)!r} there, {now.get(key)!r} now{more}'
      if not retrain:
        raise ConfigError(
          f'{task.label}: {task.workdir} holds a run of another config '
          f'({what}); run the same command as before, use another '
          '--workdir, or add --retrain to train it afresh (the old folder '
          'is kept beside it)'
        )
      if task.workdir in queued:
        raise ConfigError(
          f'--retrain: {task.label} is still queued; cancel its job first'
        )
      target = f'{task.workdir}.replaced'
      while os.path.exists(target):
        target += '_'
      os.rename(task.workdir, target)
      print(
        f'{task.label}: another config ({what}); the old run moved to {target}',
        file=sys.stderr,
      )
      moved.append(task.workdir)
  for workdir, now in planned.items():
    os.makedirs(workdir, exist_ok=True)
    path = layout.path(workdir, layout.PLANNED)
    there = files.read_json(path)
    if there is None or there['config'] != now:  # none, or never ran
      files.write_json(path, dict(fingerprint=fingerprint(now), config=now))
  return moved


def teacher_task(task, plan):
  """The task of `plan` whose workdir is `task`'s teacher, or None."""
  teacher = task.config.train.teacher
  return next((t for t in plan if teacher and t.workdir == teacher), None)


def ready(tasks, plan) -> tuple[list, list]:
  """(tasks that can train now, tasks whose teacher in the plan has not
  finished)."""
  now, later = [], []
  for task in tasks:
    teacher = teacher_task(task, plan)
    finished = teacher is None or outcome(teacher.workdir) == 'finished'
    (now if finished else later).append(task)
  return now, later


def say_waiting(tasks, plan):
  for task in tasks:
    teacher = teacher_task(task, plan)
    print(
      f'{task.label}: waits for its teacher {teacher.label} to finish',
      file=sys.stderr,
    )


def in_stages(plan, train) -> list:
  """Calls train(tasks) on the unfinished tasks whose teachers have
  finished, again as long as that lets more start; returns the tasks
  left waiting for a teacher that did not finish."""
  left = unfinished(plan)
  while left:
    now, later = ready(left, plan)
    if not now:
      break
    train(now)
    left = later
  say_waiting(left, plan)
  return left


def unfinished(plan) -> list[Task]:
  """The tasks without a result.json, saying which are skipped."""
  left = []
  for task in plan:
    if outcome(task.workdir) == 'finished':
      print(f'{task.label}: finished, skipped', file=sys.stderr)
    else:
      left.append(task)
  return left


def run_plan(plan, devices=None) -> list[str]:
  """Trains the unfinished runs one after another in this process
  (resuming any with checkpoints) on `devices` (None: all); returns the
  workdirs it trained. A failure stops here (its failure.json written)."""
  trained = []

  def train(tasks):
    for task in tasks:
      print(f'{task.label}: training in {task.workdir}', file=sys.stderr)
      run_task(task, devices)
      trained.append(task.workdir)

  in_stages(plan, train)
  return trained


def finish(experiment, root: str, seeds: int) -> list[dict]:
  """After the runs: each finished CIFAR run's layer responses where the
  experiment plots them (seed 0, once), the ledger, and the plots in
  ROOT (curves.png, responses.png)."""
  if 'responses' in experiment.plots:
    for run in experiment.runs:
      workdir = os.path.join(root, run.name, 'seed0')
      finished = os.path.exists(layout.path(workdir, layout.RESULT))
      if finished and not os.path.exists(os.path.join(workdir, responses.FILE)):
        responses.workdir_responses(workdir)
  rows = ledger(experiment, root, seeds)
  write_ledger(rows, root)
  for kind in experiment.plots:
    draw = getattr(plots, kind)  # plots.curves, plots.responses
    draw(experiment, root, seeds, os.path.join(root, f'{kind}.png'))
  return rows
