"""Many runs at once on a SLURM cluster, through submitit: one job array
per invocation, one array task per run.

Processes: one per GPU (`--ntasks-per-node` = GPUs per node), each
seeing its node's GPUs and owning the one of its local rank, as JAX's
SLURM convention, NVIDIA's JAX containers and MaxText have it; on CPU
nodes `--tasks_per_node` processes, each with the CPU devices the
submitting environment gives (XLA_FLAGS, default 1). resnet_jax/processes.py
joins them and refuses a job whose processes x local devices is not what
it asked for. srun ends every task of a run as soon as one dies
(--kill-on-bad-exit), so a lost node ends the job within SLURM's KillWait
instead of leaving the others waiting on it. Each task writes its output
to its run's WORKDIR/log.txt (other ranks: log.rankR.txt); submitit's own
files (pickles, its logs) are under ROOT/slurm/JOBID/.

The code a task runs is the package as submitted: a copy of it under
ROOT/slurm/code/HASH/ is the job's working folder, found first on its
path, so a task requeued after the checkout changed still runs what was
submitted, and its result.json names the commit submitted.

Preemption and time limits: SLURM sends USR2 `signal_delay_s` before a
time limit (submitit's `--signal`), SIGTERM when it preempts or requeues
a job. Either makes the run save at its current step and stop (the
project's preemption save, run/preemption.py). After a USR2 submitit's
own hook runs: it calls SweepTask.checkpoint, requeues the task and exits
(at most `max_requeues` times for time limits: submitit's
max_num_timeout); after a SIGTERM the cluster requeues it itself. The
task then starts again and resumes from its checkpoints, bit for bit as
if never stopped.

Without a SLURM accounting database (sacct), a task's end is read from
its run folder (result.json, failure.json), submitit's result file, and
squeue: a task that has left the queue with neither is a failure, whose
reason is srun's own line (which task, on which node, died of what) where
srun wrote one.
"""

import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from resnet_jax import processes
from resnet_jax.config import arguments
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
  tasks_per_node: int | None = None  # default: one per GPU (1 without)
  cpus_per_task: int = 8
  mem_gb: float | None = None
  sbatch: tuple[str, ...] = ()  # KEY=VALUE extra sbatch options
  max_running: int = 256  # the array's %M
  signal_delay_s: int = 90  # USR2 this long before the time limit
  # Requeues after a time limit (submitit's max_num_timeout, 3 by
  # default): 90 ImageNet epochs in 1-day slices need more; DeiT and
  # ConvNeXt pass 30.
  max_requeues: int = 30
  coordinator_port: int | None = None  # None: JAX's range (processes.py)
  init_timeout_s: int = processes.DEFAULT_INIT_TIMEOUT_S
  host_devices: int = 1  # CPU devices of a process on a node without GPUs

  @property
  def tasks(self) -> int:
    """Processes per node: one per GPU unless asked otherwise."""
    return self.tasks_per_node or max(1, self.gpus_per_node)

  def expected(self) -> processes.Expected:
    if self.gpus_per_node:
      return processes.Expected(
        self.nodes, self.tasks, self.gpus_per_node // self.tasks, 'gpu'
      )
    return processes.Expected(self.nodes, self.tasks, self.host_devices, 'cpu')

  def check(self, array_size: int = 1):
    """One line for what cannot share out, before anything is submitted."""
    if self.gpus_per_node and self.gpus_per_node % self.tasks:
      raise ConfigError(
        f'--tasks_per_node={self.tasks} does not divide '
        f'--gpus_per_node={self.gpus_per_node}: each process owns the same '
        'number of GPUs (default: one process per GPU)'
      )
    if self.max_requeues < 0:
      raise ConfigError(f'--max_requeues={self.max_requeues} is negative')
    if self.init_timeout_s < 1:
      raise ConfigError(
        f'--init_timeout_s={self.init_timeout_s} must be at least 1'
      )
    processes.check_port_base(self.coordinator_port, array_size)

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
      tasks_per_node=self.tasks,
      gpus_per_node=self.gpus_per_node,
      cpus_per_task=self.cpus_per_task,
      slurm_array_parallelism=self.max_running,
      slurm_signal_delay_s=self.signal_delay_s,
      # One task dead (a lost node, a kill) ends the others at once: they
      # would otherwise wait in a collective for JAX's heartbeat timeout.
      slurm_srun_args=['--kill-on-bad-exit=1'],
      slurm_additional_parameters=extra,
      **({'mem_gb': self.mem_gb} if self.mem_gb is not None else {}),
      **{k: v for k, v in chosen.items() if v is not None},
    )


def check_environment(env=None):
  """What the submitting shell must not pass on to the tasks (sbatch
  exports its environment)."""
  env = os.environ if env is None else env
  if 'JAX_COORDINATOR_ADDRESS' in env:
    raise ConfigError(
      f'JAX_COORDINATOR_ADDRESS={env["JAX_COORDINATOR_ADDRESS"]} is set in '
      'this shell, and sbatch would pass it to every task, where SLURM '
      'says where the coordinator is: unset it (and JAX_NUM_PROCESSES, '
      'JAX_PROCESS_ID) before submitting'
    )


class SweepTask:
  """What submitit runs on each node's processes: the task, its output in
  the run folder, its processes joined and checked, and the preemption
  save before submitit's requeue."""

  def __init__(self, task: tasks.Task, resources: Resources, commit: str):
    self.task = task
    self.resources = resources
    self.commit = commit

  def __call__(self) -> dict:
    submitit = _submitit()
    rank = submitit.JobEnvironment().global_rank
    _output_to(self.task, rank, self.commit)
    requeue = signal.getsignal(signal.SIGUSR2)  # submitit's own handler
    warned = []

    def on_warning(signum, frame):
      del frame
      warned.append(signum)
      from resnet_jax.run import preemption

      preemption.request('SIGUSR2')
      if int(os.environ.get('SLURM_NTASKS', '1')) > 1:
        os.kill(os.getpid(), signal.SIGTERM)  # JAX's service: every rank

    signal.signal(signal.SIGUSR2, on_warning)
    r = self.resources
    try:
      processes.start(
        r.expected(), r.coordinator_port, r.init_timeout_s, say=True
      )
    except ConfigError as e:  # the job's shape: one line in the ledger
      print(f'error: {e}', file=sys.stderr, flush=True)
      if rank == 0:
        tasks.write_failure(self.task, str(e), 2)
      raise
    try:
      return tasks.run_task(self.task, commit_id=self.commit)
    except Exception as e:
      if not tasks.interrupted(e):
        raise  # failure.json is written; submitit keeps the traceback
      print(str(e), file=sys.stderr, flush=True)
      if warned and rank == 0 and callable(requeue):
        requeue(signal.SIGUSR2, None)  # checkpoint(), requeue, exit
      # SIGTERM: the cluster requeues (or cancelled) the task itself.
      # SystemExit leaves no result file: submitit waits on. The other
      # ranks of a warned task leave quietly, so that srun (which ends a
      # step on a task's failure) lets rank 0 requeue the job.
      sys.exit(0 if warned and rank else e.exit_code)

  def checkpoint(self):
    """submitit's hook on USR2: the task to requeue, the same one (the
    run resumes from the checkpoint it has just saved)."""
    return _submitit().helpers.DelayedSubmission(
      SweepTask(self.task, self.resources, self.commit)
    )


def _output_to(task: tasks.Task, rank: int, commit: str):
  """This process's stdout and stderr appended to the run's log, after a
  line saying which job, slice, node and code this is."""
  os.makedirs(task.workdir, exist_ok=True)
  log = task.log if rank == 0 else task.log.replace('.txt', f'.rank{rank}.txt')
  sys.stdout.flush()
  sys.stderr.flush()
  fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  env = os.environ
  job = f'SLURM job {env.get("SLURM_JOB_ID")}'
  if 'SLURM_ARRAY_JOB_ID' in env:
    job += f' (array {env["SLURM_ARRAY_JOB_ID"]}_{env["SLURM_ARRAY_TASK_ID"]})'
  header = (
    f'==== {time.strftime("%Y-%m-%d %H:%M:%S")}: {task.label}, {job}, '
    f'restart {env.get("SLURM_RESTART_COUNT", "0")}, node '
    f'{env.get("SLURMD_NODENAME", os.uname().nodename)}, code '
    f'{arguments.PACKAGE} (commit {commit})\n'
  )
  os.write(fd, header.encode())
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  os.close(fd)


def snapshot(root: str) -> str:
  """The package as it is now, copied once per content to
  ROOT/slurm/code/HASH/resnet_jax (with the built-in configs): the folder
  the tasks run in, so that a requeued task runs the code submitted."""
  package, configs = arguments.PACKAGE, arguments.shipped_folder('configs')
  digest = hashlib.sha256()
  sources = []
  for base, prefix in ((package, ''), (configs, 'configs')):
    for folder, dirs, names in os.walk(base):
      dirs[:] = sorted(d for d in dirs if d not in _NOT_COPIED)
      for name in sorted(names):
        if name.endswith('.py'):
          path = os.path.join(folder, name)
          rel = os.path.join(prefix, os.path.relpath(path, base))
          sources.append((path, rel))
          digest.update(rel.encode() + b'\0')
          with open(path, 'rb') as f:
            digest.update(f.read() + b'\0')
  target = os.path.join(
    os.path.abspath(root), 'slurm', 'code', digest.hexdigest()[:12]
  )
  if os.path.isdir(target):
    return target
  tmp = f'{target}.tmp{os.getpid()}'
  for path, rel in sources:
    dest = os.path.join(tmp, 'resnet_jax', rel)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(path, dest)
  samples = arguments.shipped_folder('samples')
  if os.path.isdir(samples):  # data, not code: linked
    link = os.path.join(tmp, 'resnet_jax', 'samples')
    os.symlink(os.path.abspath(samples), link)
  try:
    os.rename(tmp, target)
  except OSError:  # another command made the same copy meanwhile
    shutil.rmtree(tmp, ignore_errors=True)
  return target


_NOT_COPIED = ('__pycache__', 'samples', 'configs')


def submit(task_list, root: str, name: str, resources: Resources) -> list:
  """One job array of the tasks, running the package as it is now (a
  snapshot); records each task's job in jobs.json and returns the
  records."""
  submitit = _submitit()
  if not task_list:
    return []
  root = os.path.abspath(root)
  code = snapshot(root)
  commit = tasks.commit()
  executor = submitit.AutoExecutor(
    folder=os.path.join(root, 'slurm', '%j'),
    cluster='slurm',
    slurm_max_num_timeout=resources.max_requeues,
  )
  params = resources.parameters(name)
  params['slurm_additional_parameters'] = dict(
    params['slurm_additional_parameters'], chdir=code
  )
  executor.update_parameters(**params)
  for t in task_list:  # what the ledger says now is this attempt's
    tasks.forget_failure(t.workdir)
  jobs = executor.submit_array(
    [SweepTask(t, resources, commit) for t in task_list]
  )
  records = [
    dict(
      job_id=job.job_id,
      run=t.run.name,
      seed=t.seed,
      workdir=t.workdir,
      result_file=str(job.paths.result_pickle),
      slurm_log=str(job.paths.stdout),
      slurm_errors=str(job.paths.stderr),
      commit=commit,
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
  task = tasks.Task(_run_of(record), record['seed'], None, record['workdir'])
  error = _submitit_error(record['result_file'])
  info = _job_info(record['job_id'])
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
  tasks.write_failure(task, error)
  return 'failed'


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


def _job_info(job_id: str) -> dict:
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
