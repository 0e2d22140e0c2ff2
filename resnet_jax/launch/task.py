"""One run of an experiment as a unit of work: train it (or resume it),
test it by the paper's protocol, and leave its outcome in its workdir.

WORKDIR/result.json says it finished; WORKDIR/failure.json that it failed,
with its one-line error and the path of its log. The same task runs in
the reproduce command's own process (--jobs=1), in a process of its own
(launch/local.py starts `python -m resnet_jax.launch.task FILE`) and as a
SLURM task (launch/slurm.py).

A run stopped by a signal (preemption, a time limit, Ctrl-C) has saved its
checkpoint and is not a failure: started again, it resumes.
"""

import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import typing
from typing import Any

import jax

from resnet_jax import command
from resnet_jax import errors
from resnet_jax.config import arguments
from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.run import files
from resnet_jax.run import layout
from resnet_jax.run import lock


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """A run of an experiment (paper/experiments.py), before its seeds:
  what reproduce plans and the launchers start, one Task a seed."""

  name: str  # its workdir, under the experiment's
  config: str  # configs/FILE.py:ARG
  paper_error: float | None = None
  # ImageNet runs: the protocol of the paper's number (data.eval_protocol)
  test_protocol: str = 'ten_crop'
  # KEY=VALUE overrides of this run alone (an ablation's values), applied
  # after the command's --set ones
  overrides: tuple[str, ...] = ()
  # Distillation: the run of the experiment whose workdir (same seed) is
  # this one's train.teacher, unless --set gives one; it trains first.
  teacher: str | None = None


class Task(typing.NamedTuple):
  """A run of an experiment with one seed, its config built and checked."""

  run: PlannedRun
  seed: int
  config: Any  # the ConfigDict the run trains with
  workdir: str

  @property
  def label(self) -> str:
    return f'{self.run.name} seed {self.seed}'

  @property
  def log(self) -> str:
    return layout.path(self.workdir, layout.LOG)


def planned_config(config) -> dict:
  """The config a run is planned with, flat, as JSON gives it back
  (sequences as lists), so that it compares equal to planned.json's."""
  return as_json(keys.flatten(json.loads(config.to_json_best_effort())))


def as_json(value):
  """`value` as a JSON file reads back: tuples become lists."""
  return json.loads(json.dumps(value, default=str))


def fingerprint(flat: dict) -> str:
  """A short hash of a flat config: equal for equal configs."""
  text = json.dumps(sorted(flat.items()), default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def outcome(workdir: str) -> str | None:
  """'finished', 'failed', or None (never run, running, or stopped)."""
  if os.path.exists(layout.path(workdir, layout.RESULT)):
    return 'finished'
  if os.path.exists(layout.path(workdir, layout.FAILURE)):
    return 'failed'
  return None


def last_step(workdir: str) -> int | None:
  """The last training step in the run's metrics log, if any."""
  path = layout.path(workdir, layout.METRICS)
  try:
    with open(path, 'rb') as f:
      f.seek(max(0, os.path.getsize(path) - 65536))
      lines = f.read().decode(errors='replace').splitlines()
  except OSError:
    return None
  for line in reversed(lines):
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if record.get('kind') == 'train':
      return record['step']
  return None


def read_failure(workdir: str) -> dict | None:
  return files.read_json(layout.path(workdir, layout.FAILURE))


def write_failure(task: Task, error: str, exit_code: int | None = None):
  """failure.json: the run's one-line error and where its log is."""
  os.makedirs(task.workdir, exist_ok=True)
  files.write_json(
    layout.path(task.workdir, layout.FAILURE),
    dict(
      run=task.run.name,
      seed=task.seed,
      error=error,
      log=os.path.abspath(task.log),
      exit_code=exit_code,
      time=time.time(),
    ),
  )


def one_line(error: BaseException) -> str:
  """The error as the ledger shows it: a ConfigError's or a stopped run's
  own line; otherwise the exception's type and its first line."""
  text = str(error).strip()
  first = text.splitlines()[0][:300] if text else ''
  if isinstance(error, (ConfigError, errors.Stopped)):
    return first
  return f'{type(error).__name__}: {first}' if first else type(error).__name__


def interrupted(error: BaseException) -> bool:
  """A run stopped by a signal after saving (exit status 128 + N)."""
  return isinstance(error, errors.Stopped) and error.exit_code > 128


def commit() -> str:
  """The checkout's commit ('+dirty' with uncommitted changes to the
  package or its configs), or 'unknown' for an installed copy."""

  def git(*args):
    return subprocess.run(
      ['git', *args],
      cwd=arguments.REPO,
      capture_output=True,
      text=True,
      check=True,
    ).stdout.strip()

  try:
    head = git('rev-parse', '--short', 'HEAD')
    changed = git(
      'status',
      '--porcelain',
      '--untracked-files=no',
      '--',
      'resnet_jax',
      'configs',
    )
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
  return f'{head}+dirty' if changed else head


def train_run(task: Task, devices=None, commit_id=None, began=None) -> dict:
  """Trains (or resumes) the run on `devices` (None: all of the job's);
  writes and returns its result.json. `commit_id`: the code's commit as
  submitted (default: the checkout's now); `began`: when this slice of
  the run started (its wall-clock adds to the slices before it)."""
  from resnet_jax.train import loop

  run, config, workdir = task.run, task.config, task.workdir
  began = time.time() if began is None else began
  planned = fingerprint(planned_config(config))
  result = loop.train_and_evaluate(config, workdir, devices)
  if config.data.name == 'imagenet2012':  # the paper's test (10 crops)
    from resnet_jax.eval import saved_run

    config.data.eval_protocol = run.test_protocol
    result = saved_run.evaluate_workdir(config, workdir)
  if 'top1_error' not in result:
    raise ConfigError(
      f'{run.name}: no evaluation result; set data.eval_on to a split'
    )
  used = devices if devices is not None else jax.devices()  # global
  slices = record_slice(workdir, began, 'finished')
  record = dict(
    run=run.name,
    config=run.config,
    seed=task.seed,
    error=100 * result['top1_error'],
    steps=result['step'],
    wall_clock_s=sum(s['end'] - s['start'] for s in slices),
    slices=len(slices),
    device=used[0].device_kind,
    devices=len(used),
    commit=commit_id or commit(),
    fingerprint=planned,  # of the config planned (planned.json)
  )
  if jax.process_index() == 0:
    files.write_json(layout.path(workdir, layout.RESULT), record)
  return record


def record_slice(workdir: str, began: float, how: str) -> list[dict]:
  """Adds this slice of the run (from `began` to now, ended `how`) to
  WORKDIR/slices.json, written by the first process; returns them all.
  A slice killed outright (SIGKILL, a lost node) cannot: the launcher
  that sees it end adds it from the scheduler's times (add_slice)."""
  return add_slice(workdir, began, time.time(), how)


def add_slice(workdir: str, start: float, end: float, how: str) -> list[dict]:
  slices = read_slices(workdir)
  slices.append(dict(start=start, end=end, ended=how))
  slices.sort(key=lambda s: s['start'])
  if jax.process_index() == 0 and os.path.isdir(workdir):
    files.write_json(layout.path(workdir, layout.SLICES), slices)
  return slices


def read_slices(workdir: str) -> list[dict]:
  return files.read_json(layout.path(workdir, layout.SLICES)) or []


def forget_failure(workdir: str):
  """A failure.json from an earlier attempt, gone: the run starts again."""
  path = layout.path(workdir, layout.FAILURE)
  if os.path.exists(path):
    os.remove(path)


# The exit status of a task refused by its run's lock (sysexits'
# EX_TEMPFAIL): another run trains in its folder, and goes on.
IN_USE_EXIT = 75


def run_task(task: Task, devices=None, commit_id=None) -> dict:
  """train_run, leaving failure.json where it fails (and raising on); the
  slice's time is recorded however it ends."""
  forget_failure(task.workdir)
  began = time.time()
  try:
    return train_run(task, devices, commit_id, began)
  except errors.InUse:
    raise  # another run holds the folder: nothing of ours to record
  except Exception as e:
    if lock.held_elsewhere(task.workdir):  # a duplicate, failed beside it
      raise
    stopped = interrupted(e)
    record_slice(task.workdir, began, 'stopped' if stopped else 'failed')
    if not stopped and jax.process_index() == 0:
      code = e.exit_code if isinstance(e, errors.Stopped) else None
      write_failure(task, one_line(e), code)
    raise


def save(task: Task, path: str):
  """The task as a file that `python -m resnet_jax.launch.task` runs."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    pickle.dump(task, f)


def main(argv):
  if len(argv) != 2:
    raise ConfigError('usage: python -m resnet_jax.launch.task TASK_FILE')
  with open(argv[1], 'rb') as f:
    task = pickle.load(f)
  cpus = sorted(os.sched_getaffinity(0))
  print(
    f'{task.label}: pid {os.getpid()}, {jax.device_count()} '
    f'{jax.devices()[0].platform} devices, CPUs {cpus}',
    file=sys.stderr,
    flush=True,
  )
  try:
    run_task(task)
  except errors.InUse as e:  # its launcher must not call this a failure
    raise errors.Stopped(str(e), IN_USE_EXIT) from None


if __name__ == '__main__':
  command.run(main)
