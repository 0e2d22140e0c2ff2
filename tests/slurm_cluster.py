"""A real one-node SLURM cluster for the tests, in a temporary folder.

munged, slurmctld and slurmd from Debian's `munge` and `slurm-wlm`, with
a key, sockets, ports, state and logs of their own (clients find it
through SLURM_CONF), stopped by the pids in their pid files afterwards.
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


def _conf(root: str, host: str) -> str:
  ctld, slurmd = _free_ports(2)
  memory_mb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 20
  return f"""ClusterName=resnet_jax_tests
SlurmctldHost={host}
SlurmUser=root
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
AuthInfo=socket={root}/munge/socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
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
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb // 2}
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


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
def cluster(root: str):
  """Starts the daemons; yields the environment for SLURM's clients."""
  root = os.path.abspath(root)
  for sub in ('munge', 'state', 'spool'):
    os.makedirs(os.path.join(root, sub), mode=0o700, exist_ok=True)
  key = os.path.join(root, 'munge', 'key')
  with open(key, 'wb') as f:
    f.write(os.urandom(1024))
  os.chmod(key, 0o400)
  host = socket.gethostname().split('.')[0]
  conf = os.path.join(root, 'slurm.conf')
  with open(conf, 'w') as f:
    f.write(_conf(root, host))
  env = dict(os.environ, SLURM_CONF=conf)
  munge = os.path.join(root, 'munge')
  pid_files = [
    os.path.join(munge, 'pid'),
    os.path.join(root, 'slurmctld.pid'),
    os.path.join(root, 'slurmd.pid'),
  ]
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
    subprocess.run(['slurmd', '-f', conf], check=True, env=env)
    _wait_idle(env, root)
    yield env
  finally:
    subprocess.run(['scancel', '--me'], env=env, capture_output=True)
    _stop(pid_files)


def _wait_idle(env, root: str, timeout: float = 60):
  deadline = time.time() + timeout
  while time.time() < deadline:
    state = subprocess.run(
      ['sinfo', '--noheader', '--format=%T'],
      env=env,
      capture_output=True,
      text=True,
    ).stdout.strip()
    if state == 'idle':
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
