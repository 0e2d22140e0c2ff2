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

Reading the queue and waiting on it: launch/slurm_queue.py.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import signal
import sys
import time

from resnet_jax import processes
from resnet_jax.config import arguments
from resnet_jax.errors import ConfigError
from resnet_jax.launch import slurm_queue
from resnet_jax.launch import task as tasks
from resnet_jax.run import files
from resnet_jax.run import layout

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


def submit(
  task_list, root: str, name: str, resources: Resources, after=()
) -> list:
  """One job array of the tasks, running the package as it is now (a
  snapshot), held until the jobs `after` have succeeded (afterok) where
  given; records each task's job in jobs.json before Ctrl-C or SIGTERM
  can interrupt, and returns the records. sbatch's refusal is one line,
  the earlier failure records kept."""
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
  extra = dict(params['slurm_additional_parameters'], chdir=code)
  if after:
    extra['dependency'] = 'afterok:' + ':'.join(after)
  params['slurm_additional_parameters'] = extra
  executor.update_parameters(**params)
  # What the ledger says now is this attempt's, unless sbatch refuses.
  earlier = {t.workdir: tasks.read_failure(t.workdir) for t in task_list}
  for t in task_list:
    tasks.forget_failure(t.workdir)
  with _signals_held():
    try:
      with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes
        jobs = executor.submit_array(
          [SweepTask(t, resources, commit) for t in task_list]
        )
    except submitit.core.utils.FailedJobError as e:
      for workdir, failure in earlier.items():
        if failure is not None:
          files.write_json(layout.path(workdir, layout.FAILURE), failure)
      raise ConfigError(
        f'sbatch refused the job array: {_sbatch_reason(str(e))}; nothing '
        'was submitted'
      ) from None
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
        teacher=t.config.train.get('teacher') or None,
      )
      for t, job in zip(task_list, jobs)
    ]
    known = {r['workdir']: r for r in read_jobs(root)}
    known.update({r['workdir']: r for r in records})
    files.write_json(_jobs_path(root), list(known.values()))
  return records


def _sbatch_reason(stderr: str) -> str:
  """sbatch's last error line, without its prefix."""
  lines = [line.strip() for line in stderr.splitlines() if line.strip()]
  last = lines[-1] if lines else 'no reason given'
  return re.sub(r'^sbatch: error: ', '', last)


@contextlib.contextmanager
def _signals_held():
  """SIGINT and SIGTERM wait until the block is done: a submission is
  never made without its record."""
  held = {signal.SIGINT, signal.SIGTERM}
  signal.pthread_sigmask(signal.SIG_BLOCK, held)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def check_fits(resources: Resources, nodes=None):
  """Refuses, before submitting, a run that no node of the partition can
  hold (SLURM would keep it pending for PartitionConfig forever), from
  sinfo's nodes (`nodes`: its answer, for the tests). Says nothing where
  sinfo cannot be asked or knows no such partition (sbatch will say)."""
  if nodes is None:
    nodes = partition_nodes(resources.partition)
  if not nodes:
    return
  r, partition = resources, nodes[0]['partition']
  asks = [
    (
      'CPUs',
      r.tasks * r.cpus_per_task,
      'cpus',
      f'--tasks_per_node={r.tasks} x --cpus_per_task={r.cpus_per_task}',
      '--cpus_per_task',
    ),
    (
      'GPUs',
      r.gpus_per_node,
      'gpus',
      f'--gpus_per_node={r.gpus_per_node}',
      '--gpus_per_node',
    ),
  ]
  if r.mem_gb is not None:
    asks.append(
      (
        'MB of memory',
        r.mem_gb * 1024,
        'memory_mb',
        f'--mem_gb={r.mem_gb:g}',
        '--mem_gb',
      )
    )
  for what, wanted, key, flag, lower in asks:
    most = max(n[key] for n in nodes)
    if wanted > most:
      raise ConfigError(
        f'{flag} asks {wanted:g} {what} per node, and the nodes of '
        f'partition {partition} have at most {most:g}: SLURM would hold '
        f'the runs forever (PartitionConfig); lower {lower}'
      )
  fit = [n for n in nodes if all(w <= n[key] for _, w, key, *_ in asks)]
  if r.nodes > len(fit):
    raise ConfigError(
      f'--nodes={r.nodes}: partition {partition} has {len(fit)} nodes with '
      'what each node is asked: SLURM would hold the runs forever '
      '(PartitionConfig); lower --nodes or what a node is asked'
    )


def partition_nodes(partition: str | None) -> list[dict] | None:
  """sinfo's nodes of `partition` (None: the default one): name, CPUs,
  memory in MB, GPUs; None where sinfo does not answer."""
  out = slurm_queue.sinfo('--format=%N|%P|%c|%m|%G')
  if out is None:
    return None
  return read_sinfo(out, partition)


def read_sinfo(out: str, partition: str | None) -> list[dict]:
  """The nodes of `partition` (None: the default, starred one) in sinfo's
  `--Node --format=%N|%P|%c|%m|%G` lines."""
  nodes = []
  for line in out.splitlines():
    parts = line.split('|')
    if len(parts) != 5:
      continue
    name, part, cpus, memory, gres = (p.strip() for p in parts)
    default = part.endswith('*')
    part = part.rstrip('*')
    if part != partition and not (partition is None and default):
      continue
    gpus = sum(
      int(m.group(1)) for m in re.finditer(r'gpu(?::[^:,(]+)?:(\d+)', gres)
    )
    nodes.append(
      dict(
        name=name,
        partition=part,
        cpus=int(cpus),
        memory_mb=int(re.sub(r'\D.*', '', memory) or 0),
        gpus=gpus,
      )
    )
  return nodes


def _jobs_path(root: str) -> str:
  return os.path.join(root, 'slurm', JOBS_FILE)


def read_jobs(root: str) -> list:
  return files.read_json(_jobs_path(root)) or []
