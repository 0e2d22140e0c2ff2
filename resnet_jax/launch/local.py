"""Many runs at once on one machine: each task in a process of its own on
devices of its own, `jobs` at a time, the rest queued.

A process's devices: GPUs through CUDA_VISIBLE_DEVICES; TPU chips through
libtpu's TPU_VISIBLE_CHIPS and its bounds; on the CPU its own host device
count (XLA_FLAGS), the cores shared. The machine's devices are read
without starting JAX here (CUDA_VISIBLE_DEVICES or nvidia-smi,
/dev/accel*): the launcher takes no device from its runs.

A run's output goes to WORKDIR/log.txt. A run that fails leaves
failure.json and the others go on; SIGTERM or Ctrl-C stops every run
(each saves a checkpoint first), and the same command resumes them.
"""

import dataclasses
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from resnet_jax.errors import ConfigError
from resnet_jax.errors import Stopped
from resnet_jax.launch import progress
from resnet_jax.launch import task as tasks
from resnet_jax.run import lock

# libtpu's chip bounds of one process by its number of chips (a host's
# 2x2 or 2x4 chips, as JAX's docs on several processes per TPU VM have).
TPU_BOUNDS = {1: '1,1,1', 2: '1,2,1', 4: '2,2,1', 8: '2,4,1'}
TPU_PORT = 8476  # libtpu's default; slot i takes TPU_PORT + i
DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'


def machine_devices() -> tuple[str, list[str]]:
  """('gpu', ids), ('tpu', ids) or ('cpu', []): what this machine has."""
  if os.environ.get('JAX_PLATFORMS', '').lower() == 'cpu':
    return 'cpu', []
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    ids = [i for i in visible.split(',') if i.strip()]
    return ('gpu', ids) if ids else ('cpu', [])
  if shutil.which('nvidia-smi'):
    try:
      found = subprocess.run(
        ['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
      ).stdout.split()
    except (OSError, subprocess.SubprocessError):
      found = []
    if found:
      return 'gpu', found
  chips = sorted(glob.glob('/dev/accel*'))
  if chips:
    return 'tpu', [str(i) for i in range(len(chips))]
  return 'cpu', []


def host_device_count(xla_flags: str) -> int | None:
  found = re.findall(rf'{DEVICE_COUNT_FLAG}=(\d+)', xla_flags)
  return int(found[-1]) if found else None


@dataclasses.dataclass(frozen=True)
class Slot:
  """Where one process runs: its environment (its devices)."""

  name: str
  env: dict


def slots(jobs: int, per_job: int | None, found=None) -> list[Slot]:
  """`jobs` disjoint sets of `per_job` devices (None: the machine's
  devices shared out; one host device each on the CPU, or XLA_FLAGS's
  count). Refuses more devices than the machine has."""
  platform, ids = found or machine_devices()
  if jobs < 1:
    raise ConfigError(f'--jobs={jobs} must be at least 1')
  if per_job is not None and per_job < 1:
    raise ConfigError(f'--devices_per_job={per_job} must be at least 1')
  if platform == 'cpu':
    return _cpu_slots(jobs, per_job)
  per_job = per_job or len(ids) // jobs
  if per_job == 0 or jobs * per_job > len(ids):
    raise ConfigError(
      f'--jobs={jobs} x --devices_per_job={per_job or 1} needs '
      f'{jobs * (per_job or 1)} {platform.upper()}s; this machine has '
      f'{len(ids)} ({", ".join(ids)})'
    )
  out = []
  for i in range(jobs):
    mine = ids[i * per_job : (i + 1) * per_job]
    if platform == 'gpu':
      env = dict(CUDA_VISIBLE_DEVICES=','.join(mine))
    else:
      if per_job not in TPU_BOUNDS:
        raise ConfigError(
          f'--devices_per_job={per_job}: a TPU process takes '
          + ', '.join(map(str, TPU_BOUNDS))
          + ' chips'
        )
      port = TPU_PORT + i
      env = dict(
        TPU_VISIBLE_CHIPS=','.join(mine),
        TPU_CHIPS_PER_PROCESS_BOUNDS=TPU_BOUNDS[per_job],
        TPU_PROCESS_BOUNDS='1,1,1',
        TPU_PROCESS_PORT=str(port),
        TPU_PROCESS_ADDRESSES=f'localhost:{port}',
        ALLOW_MULTIPLE_LIBTPU_LOAD='1',
      )
    out.append(Slot(f'{platform.upper()}s {",".join(mine)}', env))
  return out


def _cpu_slots(jobs: int, per_job: int | None) -> list[Slot]:
  """Each process `per_job` host devices; the cores are shared. Pinning
  each process to cores of its own would change its results: XLA's
  optimised CPU convolutions split their sums by the threads a process
  may use (benchmarks/jobs.py measured other errors with pinned runs), and
  a run must train as it would alone."""
  flags = os.environ.get('XLA_FLAGS', '')
  per_job = per_job or host_device_count(flags) or 1
  rest = re.sub(rf'{DEVICE_COUNT_FLAG}=\d+', '', flags).split()
  env = dict(
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=' '.join([*rest, f'{DEVICE_COUNT_FLAG}={per_job}']),
  )
  return [Slot(f'{per_job} CPU devices', env) for _ in range(jobs)]


class _Running:
  """A task's process, its log file and its slot."""

  def __init__(self, task, slot: Slot, task_file: str):
    self.task, self.slot, self.start = task, slot, time.time()
    os.makedirs(task.workdir, exist_ok=True)
    self.log = open(task.log, 'a')
    self.log.write(
      f'==== {time.strftime("%Y-%m-%d %H:%M:%S")}: {task.label} on '
      f'{slot.name}\n'
    )
    self.log.flush()
    self.process = subprocess.Popen(
      [sys.executable, '-m', 'resnet_jax.launch.task', task_file],
      stdout=self.log,
      stderr=subprocess.STDOUT,
      stdin=subprocess.DEVNULL,
      env=dict(os.environ, **slot.env),
      # its own session: a terminal's Ctrl-C reaches the launcher, which
      # stops every run the same way
      start_new_session=True,
    )


def _last_line(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return ''
  return lines[-1][:300] if lines else ''


def _ended(running: _Running, code: int, stopping: bool) -> str:
  """The outcome of a task whose process ended with `code`: 'finished',
  'failed' (failure.json written, by the run or here), 'stopped', or
  'busy' (another run holds its folder: nothing written there)."""
  task = running.task
  found = tasks.outcome(task.workdir)
  if found is not None:
    return found
  if code == tasks.IN_USE_EXIT:
    return 'busy'
  if stopping and (code < 0 or code > 128):
    return 'stopped'  # saved at our SIGTERM: the same command resumes it
  if code < 0 or code > 128:
    number = -code if code < 0 else code - 128
    why = f'killed by {signal.Signals(number).name}'
  else:
    why = f'exited with status {code}'
  line = _last_line(task.log)
  tasks.write_failure(task, f'{why}: {line}' if line else why, code)
  return 'failed'


def run_all(
  task_list, jobs: int, per_job: int | None, task_dir: str, poll_s: float = 0.5
) -> dict:
  """Runs every task, `jobs` at a time; returns {workdir: outcome}.
  Raises Stopped (after every running task has saved) on SIGTERM/SIGINT."""
  free = slots(jobs, per_job)
  queue = list(task_list)
  running: list[_Running] = []
  outcomes = {}
  stop = []
  shown = progress.bar(len(queue))

  def on_signal(signum, frame):
    del frame
    stop.append(signum)
    for r in running:
      r.process.send_signal(signal.SIGTERM)

  previous = {
    s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)
  }
  try:
    while running or (queue and not stop):
      while free and queue and not stop:
        task = queue.pop(0)
        task_file = os.path.join(
          task_dir, task.run.name, f'seed{task.seed}.pkl'
        )
        tasks.save(task, task_file)
        r = _Running(task, free.pop(0), task_file)
        running.append(r)
        progress.say(
          shown, f'{task.label}: started on {r.slot.name} (log: {task.log})'
        )
      time.sleep(poll_s)
      for r in [r for r in running if r.process.poll() is not None]:
        running.remove(r)
        r.log.close()
        free.append(r.slot)
        found = _ended(r, r.process.returncode, bool(stop))
        outcomes[r.task.workdir] = found
        progress.say(shown, _report(r, found))
        progress.ended(shown)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    if shown is not None:
      shown.close()
  if stop:
    raise Stopped(
      f'{signal.Signals(stop[0]).name}: the runs started have saved '
      'their checkpoints; run the same command to resume',
      128 + stop[0],
    )
  return outcomes


def _report(r: _Running, found: str) -> str:
  took = f'{time.time() - r.start:.0f} s'
  if found == 'failed':
    failure = tasks.read_failure(r.task.workdir) or {}
    detail = f'failed: {failure.get("error", "")} (log: {r.task.log})'
  elif found == 'busy':
    detail = f'not trained: {_last_line(r.task.log).removeprefix("error: ")}'
  else:
    detail = found
  return f'{r.task.label}: {detail} ({took})'


def describe(workdir: str) -> str:
  """A run's state read from its folder (--status of the local launcher):
  finished, failed with its error, training (its folder held) or stopped
  at its step, or not started."""
  found = tasks.outcome(workdir)
  if found == 'failed':
    return f'failed: {(tasks.read_failure(workdir) or {}).get("error", "")}'
  if found == 'finished':
    return found
  step = tasks.last_step(workdir)
  if lock.held_elsewhere(workdir):
    return 'running' + (f', at step {step}' if step is not None else '')
  return 'not started' if step is None else f'stopped at step {step}'
