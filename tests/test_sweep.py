"""A sweep on a real one-node SLURM cluster (tests/slurm_cluster.py) tells
the truth: sbatch's refusal and a hopeless wait in one line, the wait
watchable (state lines, --status, --collect's unfinished rows), one
command per experiment folder, Ctrl-C that leaves the jobs going, and a
distillation student held on the cluster until its teacher succeeds.

Minutes of SLURM jobs on two cores, so with the cluster tests (marker
`cluster`, run beside the README's command by .ci/run).
"""

import json
import re
import signal
import subprocess
import time

import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.launch import slurm
from resnet_jax.launch import slurm_queue
from resnet_jax.paper import experiments
from resnet_jax.paper import reproduce as planning
from resnet_jax.run import lock
from tests import slurm_cluster
from tests.helpers import SAMPLE
from tests.helpers import error_lines
from tests.helpers import run_cli
from tests.helpers import start_cli
from tests.helpers import wait_for

pytestmark = pytest.mark.cluster

SWEEP = """
from resnet_jax.paper.experiments import Experiment, PlannedRun

NET = PlannedRun('resnet8', 'configs/cifar10.py:resnet8')
BROKEN = PlannedRun(
  'teacher', 'configs/cifar10.py:resnet8',
  overrides=('data.local_dir=/nonexistent/cifar',),
)
STUDENT = PlannedRun(
  'student', 'configs/cifar10.py:resnet8', teacher='teacher'
)
EXPERIMENTS = {
  'one': Experiment('a ResNet-8', (NET,)),
  'distil': Experiment('a student of a broken teacher', (BROKEN, STUDENT)),
}
"""
SETS = [
  f'--set=data.local_dir={SAMPLE}',
  '--set=data.validation_size=200',
  '--set=data.eval_on=validation',
  '--set=train.batch_size=16',
  '--set=train.log_every=1',
  '--set=train.checkpoint_every=5',
]
SLURM = [
  '--launcher=slurm',
  '--gpus_per_node=0',
  '--cpus_per_task=1',
  '--time=20',
  '--poll_s=1',
]


def args(sweep, name, root, *flags):
  return [
    '-m',
    'resnet_jax.reproduce',
    f'{sweep}:{name}',
    f'--workdir={root}',
    *SETS,
    *SLURM,
    *flags,
  ]


def reproduce(sweep, name, root, *flags, env):
  return run_cli(*args(sweep, name, root, *flags), devices=1, timeout=600,
                 **env)


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  yield from slurm_cluster.started(tmp_path_factory)


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  path = tmp_path_factory.mktemp('sweep') / 'sweep.py'
  path.write_text(SWEEP)
  return path


def test_sbatch_refusals_and_hopeless_waits_are_one_line(cluster, sweep,
                                                         tmp_path):
  # An earlier failure stays recorded when sbatch refuses the next try.
  run = tmp_path / 'resnet8' / 'seed0'
  run.mkdir(parents=True)
  earlier = dict(run='resnet8', seed=0, error='an earlier failure', log='x',
                 exit_code=1, time=0)
  (run / 'failure.json').write_text(json.dumps(earlier))
  short = '--set=train.length=5'
  refused = reproduce(sweep, 'one', tmp_path, '--partition=nope', short,
                      env=cluster)
  assert refused.returncode == 2, refused.stderr[-2000:]
  assert error_lines(refused.stderr) == [
    'error: sbatch refused the job array: Batch job submission failed: '
    'Invalid partition name specified; nothing was submitted'
  ]
  assert 'Traceback' not in refused.stderr
  assert json.loads((run / 'failure.json').read_text()) == earlier
  # More CPUs than any node has: refused before submitting (sinfo) ...
  big = reproduce(sweep, 'one', tmp_path, '--cpus_per_task=64', short,
                  env=cluster)
  assert big.returncode == 2
  (line,) = error_lines(big.stderr)
  assert re.fullmatch(
    r'error: --tasks_per_node=1 x --cpus_per_task=64 asks 64 CPUs per node, '
    r'and the nodes of partition debug have at most \d+: SLURM would hold '
    r'the runs forever \(PartitionConfig\); lower --cpus_per_task',
    line,
  ), line
  assert 'submitted' not in big.stderr
  # ... and where sinfo cannot see it (an sbatch option of its own), the
  # wait ends as soon as SLURM says why it holds the run.
  held = reproduce(
    sweep, 'one', tmp_path, '--sbatch=cpus-per-task=64', short, env=cluster
  )
  assert held.returncode == 1, held.stderr[-3000:]
  failure = json.loads((run / 'failure.json').read_text())
  assert re.fullmatch(
    r'SLURM held job \d+ for PartitionConfig, which waiting cannot clear: it '
    'asks more CPUs, .*; the job is cancelled',
    failure['error'],
  ), failure
  assert re.search(
    r'resnet8 seed 0 \(job \d+\): failed: SLURM held job \d+ for '
    'PartitionConfig', held.stderr
  ), held.stderr
  ledger = (tmp_path / 'ledger.md').read_text()
  assert '- resnet8 failed, seed 0: SLURM held job' in ledger
  # Every node of the partition down: the wait ends too (the same command
  # submits again once they are up).
  node = slurm_cluster.nodes(cluster)[0]
  slurm_cluster.scontrol(cluster, f'nodename={node}', 'state=down',
                         'reason=test')
  try:
    down = reproduce(sweep, 'one', tmp_path, short, env=cluster)
  finally:
    slurm_cluster.scontrol(cluster, f'nodename={node}', 'state=resume')
  assert down.returncode == 1, down.stderr[-3000:]
  failure = json.loads((run / 'failure.json').read_text())
  assert re.fullmatch(
    r'SLURM held job \d+ for (ReqNodeNotAvail|Nodes required for job are '
    r'DOWN).*, '
    'which waiting cannot clear: every node of its partition is down or '
    r'drained \(sinfo\): choose another --partition, or run the same '
    'command once they are up; the job is cancelled',
    failure['error'],
  ), failure


def test_one_sweep_per_folder_a_watchable_wait_and_ctrl_c(cluster, sweep,
                                                          tmp_path,
                                                          monkeypatch):
  flags = ('--set=train.length=4000',)
  waiting = start_cli(*args(sweep, 'one', tmp_path, *flags), devices=1,
                      **cluster)
  run = tmp_path / 'resnet8' / 'seed0'
  wait_for(lambda: (run / 'metrics.jsonl').exists() and
           (run / 'metrics.jsonl').read_text().count('"train"') >= 3,
           'three steps')
  # A second command on the folder: refused, naming the holder.
  second = reproduce(sweep, 'one', tmp_path, *flags, env=cluster)
  assert second.returncode == 2
  (line,) = error_lines(second.stderr)
  assert re.fullmatch(
    rf'error: {tmp_path} is in use by another reproduce command \(host \S+, '
    rf'process {waiting.pid}, since \S+\): wait for it to end, or use '
    'another --workdir',
    line,
  ), line
  # The controller restarts: squeue fails for a while, the wait goes on;
  # only squeue's silence past the patience is an error.
  monkeypatch.setenv('SLURM_CONF', cluster['SLURM_CONF'])
  with slurm_cluster.controller_down(cluster):
    started = time.time()
    assert slurm_queue.in_queue(patience_s=3, pause_s=1) is None
    assert 2 <= time.time() - started < 30
    # Before submitting, silence is an error: nothing queued is assumed.
    monkeypatch.setattr(slurm_queue, 'SQUEUE_PATIENCE_S', 1)
    with pytest.raises(ConfigError, match=r'^squeue has not answered for 1 s:'
                       r' is this a SLURM login node\? Nothing was submitted'):
      slurm_queue.answered('Nothing was submitted.')
    time.sleep(5)
  assert waiting.poll() is None
  # --status: the same table, once, nothing written or held.
  status = reproduce(sweep, 'one', tmp_path, *flags, '--status', env=cluster)
  assert status.returncode == 0, status.stderr[-2000:]
  assert re.fullmatch(
    r'resnet8 seed 0 \(job \d+\): running, at step \d+\n', status.stdout
  ), status.stdout
  # The run submitted twice (another folder's jobs.json): the second job
  # is refused by the run's own lock and writes nothing over the run that
  # trains; its record settles as busy, not failed.
  plan = planning.plan_runs(
    experiments.load(f'{sweep}:one'), str(tmp_path), 1,
    [s.removeprefix('--set=') for s in [*SETS, *flags]], 1.0,
  )
  before = sorted(p.name for p in run.iterdir())
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=1')
  wanted = slurm.Resources(gpus_per_node=0, cpus_per_task=1, time_min=20)
  (twice,) = slurm.submit(plan, str(tmp_path / 'twice'), 'twice', wanted)
  wait_for(lambda: twice['job_id'] not in slurm_queue.run_squeue(),
           'the second job ends', timeout=300)
  assert slurm_queue.settle(twice, slurm_queue.run_squeue()) == 'busy'
  refusal = slurm_queue._submitit_error(twice['result_file'])
  assert refusal.startswith(
    f'resnet_jax.errors.InUse: {run} is in use by another run (host '
  ), refusal
  assert sorted(p.name for p in run.iterdir()) == before  # no failure.json
  # Ctrl-C: the wait ends in one line; the job goes on.
  waiting.send_signal(signal.SIGINT)
  out, err = waiting.communicate(timeout=120)
  assert waiting.returncode == 130, err[-3000:]
  job = re.search(r'slurm job (\d+)', out).group(1)
  assert re.search(rf'resnet8 seed 0 \(job {job}\): running', err)
  assert f'  resnet8 seed 0: job {job}, log {run}/log.txt' in err
  # (each try waits out squeue's own timeout, about 10 s)
  assert 'squeue failed (CalledProcessError); asking again in 2 s\n' in err
  assert re.search(r'\(job \d+\): pending\n', err), err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith(
    'stopped waiting: the 1 unfinished runs go on in SLURM (squeue --me); '
    'to write the ledger once they end: python -m resnet_jax.reproduce '
    f'{sweep}:one --workdir={tmp_path} --seeds=1 --launcher=slurm '
  ), last
  assert last.endswith(' --set=train.length=4000 --collect'), last
  assert slurm_cluster.job(cluster, job)['JobState'] == 'RUNNING'
  # --collect now: the run marked unfinished, with its step.
  collected = reproduce(sweep, 'one', tmp_path, *flags, '--collect',
                        env=cluster)
  assert collected.returncode == 0, collected.stderr[-2000:]
  ledger = (tmp_path / 'ledger.md').read_text()
  assert '| resnet8 | A | 75,290 |  | unfinished |' in ledger
  assert re.search(r'- resnet8 unfinished, seed 0: at step \d+', ledger)
  subprocess.run(['scancel', job], env=cluster, check=True)


def test_a_student_waits_on_the_cluster_for_its_teacher(cluster, sweep,
                                                        tmp_path):
  """One --nowait command submits teacher and student, the student held
  (afterok); the teacher fails, and the student's row says why."""
  queued = reproduce(sweep, 'distil', tmp_path, '--nowait',
                     '--set=train.length=5', env=cluster)
  assert queued.returncode == 0, queued.stderr[-3000:]
  teacher = re.search(r'teacher seed 0: job (\S+),', queued.stderr).group(1)
  assert re.search(
    rf'submitted job array \d+: 1 runs, held until job {teacher} succeeds',
    queued.stderr,
  )
  student = re.search(r'student seed 0: job (\S+),', queued.stderr).group(1)
  info = slurm_cluster.job(cluster, student)
  assert info['Dependency'].startswith(f'afterok:{teacher}')
  # The teacher fails; the same command submits it again, and the
  # student, still held on the failed attempt, now waits on the new one.
  wait_for(lambda: (tmp_path / 'teacher/seed0/failure.json').exists()
           and teacher not in slurm_cluster.queue(cluster), 'the teacher fails')
  done = reproduce(sweep, 'distil', tmp_path, '--set=train.length=5',
                   env=cluster)
  assert done.returncode == 1, done.stderr[-3000:]
  again = re.search(r'teacher seed 0: job (\S+),', done.stderr).group(1)
  assert f'student seed 0 (job {student}): now held until job {again} ' in (
    done.stderr
  )
  ledger = (tmp_path / 'ledger.md').read_text()
  assert "- teacher failed, seed 0: data.local_dir='/nonexistent/cifar'" in (
    ledger
  )
  assert re.search(
    r'- student failed, seed 0: SLURM held job \S+ for '
    r'DependencyNeverSatisfied, which waiting cannot clear: its teacher '
    rf'{tmp_path}/teacher/seed0 failed: data.local_dir=\'/nonexistent/cifar\'',
    ledger,
  ), ledger


def test_a_local_run_refused_by_its_lock_is_not_a_failure(sweep, tmp_path):
  """--launcher=local --jobs=2: a run whose folder another process holds
  (a train.py started by hand) is reported not trained, nothing written
  there; the ledger shows it unfinished. No cluster needed."""
  run = tmp_path / 'resnet8' / 'seed0'
  run.mkdir(parents=True)
  command = ('-m', 'resnet_jax.reproduce', f'{sweep}:one',
             f'--workdir={tmp_path}', *SETS, '--set=train.length=5',
             '--launcher=local')
  held = lock._take(str(run))  # as a train.py there holds it
  try:
    result = run_cli(*command, '--jobs=2', devices=1, timeout=600)
    status = run_cli(*command, '--status', devices=1)
  finally:
    held.close()
  assert status.stdout == 'resnet8 seed 0: running\n', status.stderr[-2000:]
  assert run_cli(*command, '--status').stdout == (
    'resnet8 seed 0: not started\n'
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(
    rf'resnet8 seed 0: not trained: {run} is in use by another run \(host ',
    result.stderr,
  ), result.stderr[-3000:]
  assert sorted(p.name for p in run.iterdir()) == [
    'lock', 'log.txt', 'planned.json'
  ]
  assert '- resnet8 unfinished, seed 0: not started' in (
    tmp_path / 'ledger.md'
  ).read_text()
