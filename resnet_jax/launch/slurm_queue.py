"""What SLURM says of a sweep's tasks, read with squeue, scontrol and
sinfo (no accounting database needed), and the wait on them.

A task's end is read from its run folder (result.json, failure.json),
submitit's result file and the queue: a task that has left the queue with
neither is a failure, whose reason is srun's own line (which task, on
which node, died of what) where srun wrote one, else SLURM's state
(CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY...). A task that SLURM holds
for a reason that waiting cannot clear (HOPELESS) is cancelled and written
down as failed with that reason and what to change, at once.

While it waits the command prints a line whenever a run changes state
(pending with SLURM's reason, running with its step, finished, failed
with its error) and, on a terminal, a bar of the runs ended. A failing
squeue is asked again with a growing pause for `SQUEUE_PATIENCE_S` before
it is an error.
"""

import os
import pickle
import re
import signal
import subprocess
import sys
import time

from resnet_jax.errors import ConfigError
from resnet_jax.errors import Stopped
from resnet_jax.launch import progress
from resnet_jax.launch import task as tasks
from resnet_jax.run import lock

SQUEUE_PATIENCE_S = 600  # a controller restart takes a minute or two

# Pending reasons that no wait clears, and what to change.
HOPELESS = {
  'PartitionConfig': 'it asks more CPUs, memory or GPUs per node, or more '
  'nodes, than any node of the partition has: lower --cpus_per_task, '
  '--tasks_per_node, --mem_gb, --gpus_per_node or --nodes',
  'PartitionNodeLimit': 'it asks more nodes than the partition allows: '
  'lower --nodes or choose another --partition',
  'PartitionTimeLimit': "its --time is over the partition's limit: lower "
  '--time (requeues carry a long run on)',
  'BadConstraints': 'no node has the features it asks (--sbatch=constraint)',
  'InvalidAccount': 'the account is not valid here: check --account',
  'InvalidQOS': 'the QOS is not valid here: check --qos',
  'DependencyNeverSatisfied': 'the run it depends on (its teacher) failed',
  'PartitionDown': 'the partition is down: choose another --partition, or '
  'run the same command once it is up',
  'NodesDown': 'every node of its partition is down or drained (sinfo): '
  'choose another --partition, or run the same command once they are up',
}
# Reasons for nodes that are unavailable: hopeless where every node of the
# job's partition is down or drained (sinfo), else a wait.
NODES_DOWN = ('ReqNodeNotAvail', 'Nodes required for job are DOWN')
DOWN_STATES = ('down', 'drain', 'drained', 'fail', 'maint', 'inval')


def run_squeue() -> dict:
  """{job id (array tasks as JOB_TASK): (state, reason)} of this user's
  queued and running jobs; raises OSError or SubprocessError."""
  out = subprocess.run(
    ['squeue', '--me', '--noheader', '--array', '--format=%i|%T|%r'],
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  ).stdout
  queue = {}
  for line in out.splitlines():
    if line.count('|') == 2:
      job, state, reason = (part.strip() for part in line.split('|'))
      queue[job] = (state, reason)
  return queue


def in_queue(patience_s: float = 0, pause_s: float = 2) -> dict | None:
  """run_squeue's answer, asked again with doubling pauses for up to
  `patience_s`; None where squeue does not answer by then."""
  deadline = time.time() + patience_s
  while True:
    try:
      return run_squeue()
    except (OSError, subprocess.SubprocessError) as e:
      if time.time() + pause_s > deadline:
        return None
      print(
        f'squeue failed ({type(e).__name__}); asking again in {pause_s:.0f} s',
        file=sys.stderr,
      )
      time.sleep(pause_s)
      pause_s = min(2 * pause_s, 60)


def depend(record: dict, job: str):
  """Holds a queued run until `job` has succeeded (afterok), in place of
  what it waited on (its teacher's failed attempt, submitted again)."""
  subprocess.run(
    [
      'scontrol',
      'update',
      f'jobid={record["job_id"]}',
      f'dependency=afterok:{job}',
    ],
    capture_output=True,
    timeout=60,
    check=True,
  )
  print(f'{label(record)}: now held until job {job} succeeds', file=sys.stderr)


def answered(then: str) -> dict:
  """in_queue's answer within SQUEUE_PATIENCE_S, or one line saying that
  squeue is silent, ending with `then` (what becomes of the jobs)."""
  queue = in_queue(SQUEUE_PATIENCE_S)
  if queue is None:
    raise ConfigError(
      f'squeue has not answered for {SQUEUE_PATIENCE_S} s: is this a '
      f'SLURM login node? {then}'
    )
  return queue


def job_info(job_id: str) -> dict:
  """`scontrol show job`'s KEY=VALUE words ({} where it cannot say)."""
  try:
    out = subprocess.run(
      ['scontrol', 'show', 'job', job_id],
      capture_output=True,
      text=True,
      timeout=60,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return {}
  return dict(w.split('=', 1) for w in out.split() if '=' in w)


def settle(record: dict, queue: dict | None) -> str | None:
  """A submitted task's outcome: 'finished', 'failed', 'busy' (refused
  by its run's lock: another run trains there, its folder untouched), or
  None while it is queued or running. A task that left the queue with no
  result is written down as failed, with submitit's error or the queue's
  word; one held for a hopeless reason is cancelled and written down so."""
  found = tasks.outcome(record['workdir'])
  if found is not None or queue is None:
    return found
  job = record['job_id']
  if job in queue:
    state, reason = queue[job]
    key = _hopeless_reason(job, reason) if state == 'PENDING' else None
    if key is None:
      return None
    subprocess.run(['scancel', job], capture_output=True, timeout=60)
    _fail(
      record,
      f'SLURM held job {job} for {reason}, which waiting cannot clear: '
      f'{_hopeless(key, record)}; the job is cancelled',
    )
    return 'failed'
  error = _submitit_error(record['result_file'])
  refused = error is not None and error.startswith('resnet_jax.errors.InUse')
  if refused or lock.held_elsewhere(record['workdir']):
    return 'busy'  # another run trains in its folder: nothing of ours
  info = job_info(job)
  span = _span(info)
  if span is not None and not _slice_recorded(record['workdir'], span[0]):
    tasks.add_slice(record['workdir'], *span, 'killed')  # it could not
  if error is None:
    state = info.get('JobState', 'unknown (no longer listed)')
    died = srun_error(record.get('slurm_errors'))
    error = (
      f'{died}; srun ended the other tasks (state {state}); see '
      if died
      else f'left the queue without a result (state {state}); see '
    ) + record['slurm_log']
  _fail(record, error)
  return 'failed'


def _hopeless_reason(job: str, reason: str) -> str | None:
  """The key of HOPELESS that a pending job's reason comes to, or None
  where waiting may clear it."""
  if reason in HOPELESS:
    return reason
  if reason.startswith(NODES_DOWN):
    partition = job_info(job).get('Partition')
    if partition and all_nodes_down(partition):
      return 'NodesDown'
  return None


def sinfo(*args: str) -> str | None:
  """sinfo's answer, one line a node (`--noheader --Node`), or None where
  it does not answer."""
  try:
    return subprocess.run(
      ['sinfo', '--noheader', '--Node', *args],
      capture_output=True,
      text=True,
      timeout=60,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return None


def all_nodes_down(partition: str) -> bool:
  """Whether sinfo says every node of `partition` is down, drained,
  failed or in maintenance (False where it cannot say)."""
  out = sinfo(f'--partition={partition}', '--format=%t') or ''
  states = [line.strip().rstrip('*~#$@!%^-') for line in out.splitlines()]
  return bool(states) and all(s.startswith(DOWN_STATES) for s in states)


def _hopeless(reason: str, record: dict) -> str:
  """What a hopeless reason means, for this run: a student names its
  teacher's error."""
  teacher = record.get('teacher')
  failure = tasks.read_failure(teacher) if teacher else None
  if reason == 'DependencyNeverSatisfied' and failure is not None:
    return f'its teacher {teacher} failed: {failure["error"]}'
  return HOPELESS[reason]


def _fail(record: dict, error: str):
  run = tasks.PlannedRun(record['run'], '')
  tasks.write_failure(
    tasks.Task(run, record['seed'], None, record['workdir']), error
  )


_SRUN_ERROR = re.compile(r'srun: error: (\S+): tasks? ([\d,\-]+): (.+)')


def srun_error(path: str | None) -> str | None:
  """srun's first line about a task that ended badly ('srun: error: n2:
  task 3: Killed') in the task's last slice (the file is appended to on
  every requeue), as 'task 3 on node n2: Killed', or None."""
  if not path or not os.path.exists(path):
    return None
  first = None
  with open(path, errors='replace') as f:
    for line in f:
      if 'Starting with JobEnvironment' in line:  # submitit: a new slice
        first = None
      elif first is None:
        first = _SRUN_ERROR.search(line)
  if first is None:
    return None
  node, task_ids, why = first.groups()
  plural = '' if task_ids.isdigit() else 's'
  return f'task{plural} {task_ids} on node {node}: {why.strip()}'


def _submitit_error(result_file: str) -> str | None:
  """The last line of the traceback submitit saved, if it saved one."""
  if not os.path.exists(result_file):
    return None
  try:
    with open(result_file, 'rb') as f:
      kind, value = pickle.load(f)
  except Exception:  # a half-written or foreign file
    return None
  if kind != 'error':
    return None
  lines = [line for line in str(value).splitlines() if line.strip()]
  return lines[-1].strip()[:300] if lines else 'failed'


def _span(info: dict) -> tuple[float, float] | None:
  """The job's last start and its end, as times, where SLURM has both."""
  try:
    start, end = (
      time.mktime(time.strptime(info[k], '%Y-%m-%dT%H:%M:%S'))
      for k in ('StartTime', 'EndTime')
    )
  except (KeyError, ValueError):
    return None
  return (start, end) if end >= start else None


def _slice_recorded(workdir: str, start: float) -> bool:
  """Whether the run wrote down the slice that SLURM started at `start`
  itself (its own clock starts a few seconds later)."""
  return any(s['start'] >= start - 1 for s in tasks.read_slices(workdir))


def describe(record: dict, queue: dict | None) -> str:
  """A run's state in words: queued with SLURM's reason, running at its
  step, finished, failed with its error."""
  found = tasks.outcome(record['workdir'])
  if found == 'finished':
    return 'finished'
  if found == 'failed':
    failure = tasks.read_failure(record['workdir']) or {}
    return f'failed: {failure.get("error", "")}'
  state, reason = (queue or {}).get(record['job_id'], (None, None))
  if state == 'PENDING':  # with SLURM's reason, where it gives one
    return f'pending ({reason})' if reason not in ('', 'None') else 'pending'
  step = tasks.last_step(record['workdir'])
  at = f', at step {step}' if step is not None else ', no step yet'
  if state is None:
    return f'not in the queue{at}'
  return f'{state.lower()}{at}'


BUSY = 'not trained: another run holds its folder, and goes on there'


def label(record: dict) -> str:
  return f'{record["run"]} seed {record["seed"]} (job {record["job_id"]})'


def table(records, queue: dict | None) -> str:
  """One line a run, as `--status` prints them."""
  return '\n'.join(f'{label(r)}: {describe(r, queue)}' for r in records)


def wait(records, poll_s: float = 30, collect_command: str = '') -> dict:
  """Blocks until every record's task has ended; {workdir: outcome}.
  Ctrl-C or SIGTERM end the wait (not the jobs) with one line."""
  outcomes, said = {}, {}
  bar = progress.bar(len(records))
  previous = signal.signal(signal.SIGTERM, _interrupt)
  try:
    while True:
      queue = answered('The jobs go on; ' + _then(collect_command))
      for r in records:
        if r['workdir'] in outcomes:
          continue
        found = settle(r, queue)
        now = BUSY if found == 'busy' else describe(r, queue)
        if said.get(r['workdir']) != _kind(now):
          said[r['workdir']] = _kind(now)
          progress.say(bar, f'{label(r)}: {now}')
        if found is not None:
          outcomes[r['workdir']] = found
          progress.ended(bar)
      if len(outcomes) == len(records):
        return outcomes
      time.sleep(poll_s)
  except KeyboardInterrupt:
    left = len(records) - len(outcomes)
    raise Stopped(
      f'stopped waiting: the {left} unfinished runs go on in SLURM (squeue '
      '--me); ' + _then(collect_command),
      130,
    ) from None
  finally:
    signal.signal(signal.SIGTERM, previous)
    if bar is not None:
      bar.close()


def _kind(state: str) -> str:
  """A state without its step: a new line when the kind changes."""
  return state.split(', at step')[0]


def _then(command: str) -> str:
  return (
    f'to write the ledger once they end: {command} --collect'
    if command
    else 'run the same command with --collect to write the ledger'
  )


def _interrupt(signum, frame):
  raise KeyboardInterrupt
