"""Many runs at once on a SLURM cluster, through submitit: one job array
per invocation, one array task per run.

A run of more than one node is a task of one process per node, whose
processes find each other through jax.distributed's SLURM detection
(parallel.initialize_distributed). Each task writes its output to its
run's WORKDIR/log.txt (other ranks: log.rankR.txt); submitit's own files
(pickles, its logs) are under ROOT/slurm/JOBID/.

Preemption and time limits: SLURM sends USR2 `signal_delay_s` before a
time limit (submitit's `--signal`), SIGTERM when it preempts or requeues
a job. Either makes the run save at its current step and stop (the
project's preemption save, run/preemption.py). After a USR2 submitit's
own hook runs: it calls SweepTask.checkpoint, requeues the task and exits;
after a SIGTERM the cluster requeues it itself. The task then starts again
and resumes from its checkpoints, bit for bit as if never stopped.

Without a SLURM accounting database (sacct), a task's end is read from
its run folder (result.json, failure.json), submitit's result file, and
squeue: a task that has left the queue with neither is a failure.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time

from resnet_jax.errors import ConfigError
from resnet_jax.launch import task as tasks
from resnet_jax.run import files

JOBS_FILE = 'jobs.json'  # ROOT/slurm/jobs.json: each workdir's last task


def _submitit():
  try:
    import submitit
  except ImportError as e:
    raise ConfigError(
      "--launcher=slurm needs submitit: pip install 'resnet-jax[slurm]' "
      '(or pip install submitit)'
    ) from e
  return submitit


@dataclasses.dataclass(frozen=True)
class Resources:
  """What each run asks of the cluster (the reproduce command's flags)."""

  partition: str | None = None
  account: str | None = None
  qos: str | None = None
  time_min: int = 24 * 60
  nodes: int = 1
  gpus_per_node: int = 1
  cpus_per_task: int = 8
  mem_gb: float | None = None
  sbatch: tuple[str, ...] = ()  # KEY=VALUE extra sbatch options
  max_running: int = 256  # the array's %M
  signal_delay_s: int = 90  # USR2 this long before the time limit

  def parameters(self, name: str) -> dict:
    """submitit's parameters for an executor."""
    extra = {}
    for item in self.sbatch:
      key, sep, value = item.partition('=')
      key = key.strip().lstrip('-').replace('-', '_')
      if not key:
        raise ConfigError(f'--sbatch={item}: expected KEY=VALUE or KEY')
      extra[key] = value if sep else True
    chosen = dict(
      slurm_partition=self.partition,
      slurm_account=self.account,
      slurm_qos=self.qos,
    )
    return dict(
      name=name,
      timeout_min=self.time_min,
      nodes=self.nodes,
      tasks_per_node=1,  # one process per node, all its GPUs
      gpus_per_node=self.gpus_per_node,
      cpus_per_task=self.cpus_per_task,
      slurm_array_parallelism=self.max_running,
      slurm_signal_delay_s=self.signal_delay_s,
      slurm_additional_parameters=extra,
      **({'mem_gb': self.mem_gb} if self.mem_gb is not None else {}),
      **{k: v for k, v in chosen.items() if v is not None},
    )


class SweepTask:
  """What submitit runs on the node: the task, its output in the run
  folder, and the preemption save before submitit's requeue."""

  def __init__(self, task: tasks.Task):
    self.task = task

  def __call__(self) -> dict:
    submitit = _submitit()
    rank = submitit.JobEnvironment().global_rank
    _output_to(self.task, rank)
    requeue = signal.getsignal(signal.SIGUSR2)  # submitit's own handler
    warned = []

    def on_warning(signum, frame):
      del frame
      warned.append(signum)
      from resnet_jax.run import preemption

      if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
        os.kill(os.getpid(), signal.SIGTERM)  # JAX's service: every rank
      else:
        preemption.request('SIGUSR2')

    signal.signal(signal.SIGUSR2, on_warning)
    from resnet_jax import parallel

    parallel.initialize_distributed()
    try:
      return tasks.run_task(self.task)
    except Exception as e:
      if not tasks.interrupted(e):
        raise  # failure.json is written; submitit keeps the traceback
      print(str(e), file=sys.stderr, flush=True)
      if warned and callable(requeue):
        requeue(signal.SIGUSR2, None)  # checkpoint(), requeue, exit
      # SIGTERM: the cluster requeues (or cancelled) the task itself.
      # SystemExit leaves no result file: submitit waits on.
      sys.exit(e.exit_code)

  def checkpoint(self):
    """submitit's hook on USR2: the task to requeue, the same one (the
    run resumes from the checkpoint it has just saved)."""
    return _submitit().helpers.DelayedSubmission(SweepTask(self.task))


def _output_to(task: tasks.Task, rank: int):
  """This process's stdout and stderr appended to the run's log."""
  os.makedirs(task.workdir, exist_ok=True)
  log = task.log if rank == 0 else task.log.replace('.txt', f'.rank{rank}.txt')
  sys.stdout.flush()
  sys.stderr.flush()
  fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  header = (
    f'==== {time.strftime("%Y-%m-%d %H:%M:%S")}: {task.label}, SLURM job '
    f'{os.environ.get("SLURM_JOB_ID")} (array '
    f'{os.environ.get("SLURM_ARRAY_JOB_ID")}_'
    f'{os.environ.get("SLURM_ARRAY_TASK_ID")}), restart '
    f'{os.environ.get("SLURM_RESTART_COUNT", "0")}, node '
    f'{os.uname().nodename}\n'
  )
  os.write(fd, header.encode())
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.close(fd)


def submit(task_list, root: str, name: str, resources: Resources) -> list:
  """One job array of the tasks; records each task's job in jobs.json and
  returns the records."""
  submitit = _submitit()
  if not task_list:
    return []
  executor = submitit.AutoExecutor(
    folder=os.path.join(root, 'slurm', '%j'), cluster='slurm'
  )
  executor.update_parameters(**resources.parameters(name))
  for t in task_list:  # what the ledger says now is this attempt's
    tasks.forget_failure(t.workdir)
  jobs = executor.submit_array([SweepTask(t) for t in task_list])
  records = [
    dict(
      job_id=job.job_id,
      run=t.run.name,
      seed=t.seed,
      workdir=t.workdir,
      result_file=str(job.paths.result_pickle),
      slurm_log=str(job.paths.stdout),
    )
    for t, job in zip(task_list, jobs)
  ]
  known = {r['workdir']: r for r in read_jobs(root)}
  known.update({r['workdir']: r for r in records})
  files.write_json(_jobs_path(root), list(known.values()))
  return records


def _jobs_path(root: str) -> str:
  return os.path.join(root, 'slurm', JOBS_FILE)


def read_jobs(root: str) -> list:
  return files.read_json(_jobs_path(root)) or []


def in_queue() -> set | None:
  """The job ids (array tasks as JOB_TASK) this user has queued or
  running, or None where squeue cannot be asked."""
  try:
    out = subprocess.run(
      ['squeue', '--me', '--noheader', '--array', '--format=%i'],
      capture_output=True,
      text=True,
      timeout=120,
      check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return {line.strip() for line in out.splitlines() if line.strip()}


def settle(record: dict, queued: set | None) -> str | None:
  """A submitted task's outcome: 'finished', 'failed', or None while it
  is queued or running. A task that left the queue with no result is
  written down as failed, with submitit's error or the queue's word."""
  found = tasks.outcome(record['workdir'])
  if found is not None or queued is None or record['job_id'] in queued:
    return found
  task = tasks.Task(
    _run_of(record), record['seed'], None, record['workdir']
  )
  error = _submitit_error(record['result_file'])
  if error is None:
    state = _state(record['job_id'])
    error = f'left the queue without a result (state {state}); see ' + (
      record['slurm_log']
    )
  tasks.write_failure(task, error)
  return 'failed'


def _run_of(record: dict):
  return tasks.PlannedRun(record['run'], '')


def _submitit_error(result_file: str) -> str | None:
  """The last line of the traceback submitit saved, if it saved one."""
  if not os.path.exists(result_file):
    return None
  import pickle

  try:
    with open(result_file, 'rb') as f:
      kind, value = pickle.load(f)
  except Exception:  # a half-written or foreign file
    return None
  if kind != 'error':
    return None
  lines = [line for line in str(value).splitlines() if line.strip()]
  return lines[-1].strip()[:300] if lines else 'failed'


def _state(job_id: str) -> str:
  try:
    out = subprocess.run(
      ['scontrol', 'show', 'job', job_id],
      capture_output=True,
      text=True,
      timeout=60,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  for word in out.split():
    if word.startswith('JobState='):
      return word.split('=', 1)[1]
  return 'unknown (no longer listed)'


def wait(records, poll_s: float = 30) -> dict:
  """Blocks until every record's task has ended; {workdir: outcome}."""
  outcomes = {}
  while True:
    queued = in_queue()
    if queued is None:
      raise ConfigError('squeue failed: is this a SLURM login node?')
    for r in records:
      if r['workdir'] not in outcomes:
        found = settle(r, queued)
        if found is not None:
          outcomes[r['workdir']] = found
          detail = found
          if found == 'failed':
            failure = tasks.read_failure(r['workdir']) or {}
            detail = f'failed: {failure.get("error", "")}'
          print(f'{r["run"]} seed {r["seed"]}: {detail}', file=sys.stderr)
    if len(outcomes) == len(records):
      return outcomes
    time.sleep(poll_s)
