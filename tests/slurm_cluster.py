"""A real SLURM cluster for the tests, in a temporary folder: one node
(this host), or several nodes on this one host.

munged, slurmctld and slurmd from Debian's `munge` and `slurm-wlm`, with
a key, sockets, ports, state and logs of their own (clients find it
through SLURM_CONF), stopped by the pids in their pid files afterwards.
Several nodes are several slurmd daemons, each started with `-N NAME`,
with a port, spool folder, log and pid file of its own (slurm.conf's %n),
all at 127.0.0.1; their names go into /etc/hosts while the cluster runs,
since a job's processes find their coordinator by the first node's name.
Needs root (slurmd starts jobs as their users); without the programs or
root the tests that need it skip, saying what to install.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import time

INSTALL = 'apt-get install -y slurm-wlm munge'
PROGRAMS = ('munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol')


def missing() -> str | None:
  """Why no cluster can start here, or None."""
  absent = [p for p in PROGRAMS if shutil.which(p) is None]
  if absent:
    return f'needs {", ".join(absent)}: {INSTALL} (as root)'
  if os.geteuid() != 0:
    return 'needs root: slurmd starts the jobs as their users'
  return None


def _free_ports(n: int) -> list[int]:
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


HOSTS = '/etc/hosts'


def _conf(root: str, host: str, nodes: tuple[str, ...], cpus=None) -> str:
  """slurm.conf: one node named `host`, or `nodes` on this host (each
  with `cpus`, default the host's, a port of its own and half the host's
  memory shared out)."""
  ctld, *ports = _free_ports(1 + max(1, len(nodes)))
  memory_mb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 20
  cpus = cpus or os.cpu_count()
  if not nodes:
    node_lines = (
      f'SlurmdPort={ports[0]}\n'
      f'SlurmdSpoolDir={root}/spool\n'
      f'SlurmdPidFile={root}/slurmd.pid\n'
      f'SlurmdLogFile={root}/slurmd.log\n'
      f'NodeName={host} CPUs={cpus} RealMemory={memory_mb // 2}\n'
    )
    names = host
  else:
    node_lines = (
      f'SlurmdSpoolDir={root}/spool/%n\n'
      f'SlurmdPidFile={root}/slurmd.%n.pid\n'
      f'SlurmdLogFile={root}/slurmd.%n.log\n'
      # Each daemon declares CPUs of its own, whatever the host has.
      'SlurmdParameters=config_overrides\n'
    )
    for name, port in zip(nodes, ports):
      node_lines += (
        f'NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 '
        f'Port={port} CPUs={cpus} RealMemory={memory_mb // (2 * len(nodes))}\n'
      )
    names = ','.join(nodes)
  return f"""ClusterName=resnet_jax_tests
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld}
AuthType=auth/munge
AuthInfo=socket={root}/munge/socket
StateSaveLocation={root}/state
SlurmctldPidFile={root}/slurmctld.pid
SlurmctldLogFile={root}/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=300
KillWait=30
{node_lines}PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


@contextlib.contextmanager
def _names_in_hosts(names):
  """`names` resolve to 127.0.0.1 while the cluster runs: a line of
  /etc/hosts, added and removed in place (the file may be a mount)."""
  if not names:
    yield
    return
  line = f'127.0.0.1 {" ".join(names)}  # resnet_jax test cluster\n'
  with open(HOSTS) as f:
    before = f.read()
  with open(HOSTS, 'w') as f:
    f.write(before + ('' if before.endswith('\n') else '\n') + line)
  try:
    yield
  finally:
    with open(HOSTS) as f:
      now = f.read()
    with open(HOSTS, 'w') as f:
      f.write(now.replace(line, ''))


def _stop(pid_files: list[str]):
  """SIGTERM to every daemon at once, then waits until all have exited
  (about 2 s each: together 1.4 s, one after the other 5 s)."""
  pids = []
  for pid_file in pid_files:
    try:
      with open(pid_file) as f:
        pids.append(int(f.read().strip()))
    except (OSError, ValueError):
      continue
  for pid in pids:
    with contextlib.suppress(ProcessLookupError):
      os.kill(pid, 15)
  deadline = time.time() + 10
  while pids and time.time() < deadline:
    for pid in list(pids):
      try:
        os.kill(pid, 0)
      except ProcessLookupError:
        pids.remove(pid)
    time.sleep(0.05)


@contextlib.contextmanager
def cluster(root: str, nodes: tuple[str, ...] = (), cpus: int | None = None):
  """Starts the daemons; yields the environment for SLURM's clients. With
  `nodes`, one slurmd per name, all on this host, each declaring `cpus`
  (default: the host's)."""
  root = os.path.abspath(root)
  for sub in ('munge', 'state', 'spool'):
    os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
  for name in nodes:
    os.makedirs(os.path.join(root, 'spool', name), mode=0o700, exist_ok=True)
  key = os.path.join(root, 'munge', 'key')
  with open(key, 'wb') as f:
    f.write(os.urandom(1024))
  os.chmod(key, 0o400)
  host = socket.gethostname().split('.')[0]
  conf = os.path.join(root, 'slurm.conf')
  with open(conf, 'w') as f:
    f.write(_conf(root, host, tuple(nodes), cpus))
  env = dict(os.environ, SLURM_CONF=conf)
  munge = os.path.join(root, 'munge')
  slurmd_pids = [os.path.join(root, f'slurmd.{n}.pid') for n in nodes] or [
    os.path.join(root, 'slurmd.pid')
  ]
  pid_files = [
    os.path.join(munge, 'pid'),
    os.path.join(root, 'slurmctld.pid'),
    *slurmd_pids,
  ]
  with _names_in_hosts(nodes):
    try:
      subprocess.run(
        [
          'munged',
          '--force',
          f'--key-file={key}',
          f'--socket={munge}/socket',
          f'--pid-file={pid_files[0]}',
          f'--log-file={munge}/log',
          f'--seed-file={munge}/seed',
        ],
        check=True,
      )
      subprocess.run(['slurmctld', '-f', conf], check=True, env=env)
      for name in nodes or [None]:
        named = ['-N', name] if name else []
        subprocess.run(['slurmd', '-f', conf, *named], check=True, env=env)
      _wait_idle(env, root, max(1, len(nodes)))
      yield env
    finally:
      subprocess.run(['scancel', '--me'], env=env, capture_output=True)
      _stop(pid_files)


def _wait_idle(env, root: str, count: int, timeout: float = 60):
  """Until sinfo lists `count` nodes, all idle."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    states = subprocess.run(
      ['sinfo', '--noheader', '--Node', '--format=%T'],
      env=env,
      capture_output=True,
      text=True,
    ).stdout.split()
    if states == ['idle'] * count:
      return
    time.sleep(0.5)
  with open(os.path.join(root, 'slurmctld.log')) as f:
    tail = f.read()[-2000:]
  raise RuntimeError(f'the test cluster is not idle after {timeout} s:\n{tail}')


def job(env, job_id: str) -> dict:
  """`scontrol show job`'s KEY=VALUE words (JobState, Reason, Restarts)."""
  out = subprocess.run(
    ['scontrol', 'show', 'job', job_id],
    env=env,
    capture_output=True,
    text=True,
  ).stdout
  return dict(w.split('=', 1) for w in out.split() if '=' in w)


def release(env, job_id: str):
  """A requeued job waits two minutes (SLURM's hold on a requeued batch
  job, BeginTime): let it start now (it may have started meanwhile, so
  a refusal is no error)."""
  subprocess.run(
    ['scontrol', 'update', f'JobId={job_id}', 'StartTime=now'],
    env=env,
    capture_output=True,
  )


def wait_restarted(env, job_id: str, restarts: int = 1, timeout: float = 300):
  """Until a requeued job has started again (`restarts` times in all),
  letting it start at once each time it waits."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    info = job(env, job_id)
    state = info.get('JobState')
    if int(info.get('Restarts', 0)) >= restarts:
      if state == 'PENDING':
        release(env, job_id)
      if state in ('RUNNING', 'COMPLETED'):  # not REQUEUED, COMPLETING
        return
    time.sleep(0.2)
  raise AssertionError(f'job {job_id} not restarted {restarts} times')


def started(tmp_path_factory, nodes: tuple[str, ...] = ()):
  """A module fixture's body: the cluster started for the module's tests
  (skipped, saying what to install, where it cannot start)."""
  import pytest

  why = missing()
  if why:
    pytest.skip(f'a SLURM cluster {why}')
  root = tmp_path_factory.mktemp('slurm')
  with cluster(str(root), nodes) as env:
    yield env


@contextlib.contextmanager
def controller_down(env, timeout: float = 60):
  """slurmctld stopped for the block (squeue, sbatch and scontrol fail as
  on a controller restart; the jobs run on), then started again from its
  saved state, its clients answering."""
  conf = env['SLURM_CONF']
  _stop([os.path.join(os.path.dirname(conf), 'slurmctld.pid')])
  try:
    yield
  finally:
    subprocess.run(['slurmctld', '-f', conf], check=True, env=env)
    deadline = time.time() + timeout
    while subprocess.run(['squeue'], env=env, capture_output=True).returncode:
      if time.time() > deadline:
        raise AssertionError('slurmctld did not come back')
      time.sleep(0.5)


def nodes(env) -> list[str]:
  """The cluster's node names, as sinfo lists them."""
  return _words(env, 'sinfo', '--noheader', '--Node', '--format=%N')


def scontrol(env, *update: str):
  """`scontrol update ...` (a node down or resumed, a partition's state)."""
  subprocess.run(['scontrol', 'update', *update], env=env, check=True)


def queue(env) -> list[str]:
  """The ids of the jobs in the queue (array tasks as JOB_TASK)."""
  return _words(env, 'squeue', '--noheader', '--array', '--format=%i')


def _words(env, *command: str) -> list[str]:
  out = subprocess.run(
    list(command), env=env, capture_output=True, text=True, check=True
  ).stdout
  return out.split()
