"""reproduce's launchers: several runs at once on this machine, each a
process on devices of its own, and a job array on a real one-node SLURM
cluster (tests/slurm_cluster.py), requeued mid-run; both ledgers equal to
the same runs made one after another, bit for bit."""

import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from resnet_jax import reproduce as reproduce_command
from resnet_jax.errors import ConfigError
from resnet_jax.launch import local
from resnet_jax.launch import slurm
from tests import slurm_cluster
from tests.helpers import SAMPLE
from tests.helpers import read_metrics
from tests.helpers import run_cli
from tests.helpers import wait_for

SWEEP = """
from resnet_jax.paper.experiments import Experiment, PlannedRun

PAIR = (
  PlannedRun('plain8', 'configs/cifar10.py:plain8'),
  PlannedRun('resnet8', 'configs/cifar10.py:resnet8', 9.99),
)
BROKEN = PlannedRun(
  'broken',
  'configs/cifar10.py:resnet8',
  overrides=('data.local_dir=/nonexistent/cifar',),
)
EXPERIMENTS = {
  'pair': Experiment('a plain and a residual ResNet-8', PAIR),
  'with_broken': Experiment('the pair and a run without data', PAIR + (BROKEN,)),
}
"""
STEPS = 40
SETS = [
  f'--set=data.local_dir={SAMPLE}',
  '--set=data.validation_size=200',
  '--set=data.eval_on=validation',
  '--set=train.batch_size=16',
  f'--set=train.length={STEPS}',
  f'--set=train.eval_every={STEPS}',
  '--set=train.log_every=1',
  '--set=train.checkpoint_every=5',
]
PAIR = ('plain8', 'resnet8')
DEVICES = 2  # every run: a process of 2 CPU devices, so results compare


def reproduce(sweep, name, root, *flags, **env):
  return run_cli(
    '-m',
    'resnet_jax.reproduce',
    f'{sweep}:{name}',
    f'--workdir={root}',
    *SETS,
    *flags,
    devices=DEVICES,
    timeout=600,
    **env,
  )


def losses(workdir):
  return [(r['step'], r['loss']) for r in read_metrics(workdir)]


def result(root, run):
  return json.loads((root / run / 'seed0' / 'result.json').read_text())


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  path = tmp_path_factory.mktemp('sweep') / 'sweep.py'
  path.write_text(SWEEP)
  return path


@pytest.fixture(scope='module')
def sequential(sweep, tmp_path_factory):
  """The pair trained one after another in one process (--jobs=1)."""
  root = tmp_path_factory.mktemp('sequential')
  done = reproduce(sweep, 'pair', root)
  assert done.returncode == 0, done.stderr[-3000:]
  return root


def test_local_runs_two_at_once_each_on_its_own_devices(sweep, sequential,
                                                         tmp_path):
  done = reproduce(sweep, 'pair', tmp_path, '--jobs=2')
  assert done.returncode == 0, done.stderr[-3000:]
  for run in PAIR:
    assert result(tmp_path, run)['error'] == result(sequential, run)['error']
    assert result(tmp_path, run)['devices'] == DEVICES
    ours = losses(tmp_path / run / 'seed0')
    assert len(ours) == STEPS and ours == losses(sequential / run / 'seed0')
    log = (tmp_path / run / 'seed0' / 'log.txt').read_text()
    assert f'{run} seed 0: pid' in log and f'{DEVICES} cpu devices' in log
  # Both at once: each started before the other had finished.
  spans = {}
  for run in PAIR:
    times = [r['time'] for r in read_metrics(tmp_path / run / 'seed0')]
    spans[run] = (min(times), max(times))
  assert spans['plain8'][0] < spans['resnet8'][1]
  assert spans['resnet8'][0] < spans['plain8'][1]
  ledger = (tmp_path / 'ledger.md').read_text()
  assert ledger.splitlines()[2].split('|')[5] == (
    (sequential / 'ledger.md').read_text().splitlines()[2].split('|')[5]
  )
  again = reproduce(sweep, 'pair', tmp_path, '--jobs=2')
  assert again.returncode == 0 and 'finished, skipped' in again.stderr


def test_device_slots_are_disjoint_and_refuse_too_many():
  gpus = local.slots(2, 2, ('gpu', ['0', '1', '2', '3']))
  assert [s.env['CUDA_VISIBLE_DEVICES'] for s in gpus] == ['0,1', '2,3']
  shared = local.slots(4, None, ('gpu', list('01234567')))
  assert [s.env['CUDA_VISIBLE_DEVICES'] for s in shared] == [
    '0,1',
    '2,3',
    '4,5',
    '6,7',
  ]
  tpus = local.slots(2, 2, ('tpu', ['0', '1', '2', '3']))
  assert [s.env['TPU_VISIBLE_CHIPS'] for s in tpus] == ['0,1', '2,3']
  assert {s.env['TPU_CHIPS_PER_PROCESS_BOUNDS'] for s in tpus} == {'1,2,1'}
  assert len({s.env['TPU_PROCESS_PORT'] for s in tpus}) == 2
  cpus = local.slots(2, 3, ('cpu', []))
  assert all(
    s.env['XLA_FLAGS'].endswith('device_count=3') for s in cpus
  ) and all(s.env['XLA_FLAGS'].count('device_count') == 1 for s in cpus)
  with pytest.raises(ConfigError, match='needs 6 GPUs; this machine has 4'):
    local.slots(3, 2, ('gpu', ['0', '1', '2', '3']))
  with pytest.raises(ConfigError, match='a TPU process takes'):
    local.slots(1, 3, ('tpu', ['0', '1', '2', '3']))


def test_launcher_flags_refused_before_anything_runs(sweep, tmp_path):
  wrong = run_cli(
    '-m',
    'resnet_jax.reproduce',
    f'{sweep}:pair',
    f'--workdir={tmp_path}/w',
    '--partition=gpu',
  )
  assert wrong.returncode == 2
  assert 'not a flag of --launcher=local' in wrong.stderr
  assert not (tmp_path / 'w').exists()


def test_slurm_time_limits_read_as_sbatch_reads_them(monkeypatch):
  assert reproduce_command.minutes('90') == 90
  assert reproduce_command.minutes('4:00:00') == 240
  assert reproduce_command.minutes('1-12') == 36 * 60
  assert reproduce_command.minutes('2-00:30:00') == 2 * 1440 + 30
  with pytest.raises(ConfigError, match='--time=soon: expected'):
    reproduce_command.minutes('soon')
  extra = slurm.Resources(sbatch=('constraint=a100', '--exclusive'))
  params = extra.parameters('t6')
  assert params['slurm_additional_parameters'] == dict(
    constraint='a100', exclusive=True
  )
  assert params['tasks_per_node'] == 1 and 'slurm_partition' not in params
  monkeypatch.setitem(sys.modules, 'submitit', None)  # not installed
  with pytest.raises(ConfigError, match=r"pip install 'resnet-jax\[slurm\]'"):
    slurm.submit([], '/nowhere', 'x', slurm.Resources())


SINFO = '''g1|gpu*|64|515000|gpu:a100:8(S:0-1)
g2|gpu*|64|515000|gpu:a100:8(S:0-1)
g3|gpu*|32|256000|gpu:4
c1|cpu|128|1000000+|(null)
g1|long|64|515000|gpu:a100:8(S:0-1)
'''


def test_a_run_no_node_can_hold_is_refused_before_submitting():
  """sinfo's nodes of the partition against what each node is asked:
  SLURM would keep such a run pending (PartitionConfig) forever."""
  gpu = slurm.read_sinfo(SINFO, None)  # the default partition
  assert [(n['name'], n['cpus'], n['gpus']) for n in gpu] == [
    ('g1', 64, 8), ('g2', 64, 8), ('g3', 32, 4)
  ]
  assert slurm.read_sinfo(SINFO, 'cpu')[0]['memory_mb'] == 1000000
  assert [n['name'] for n in slurm.read_sinfo(SINFO, 'long')] == ['g1']
  fits = slurm.Resources(nodes=2, gpus_per_node=8, cpus_per_task=8)
  slurm.check_fits(fits, gpu)  # 8 tasks x 8 CPUs, 8 GPUs, on g1 and g2
  refusals = [
    (dict(cpus_per_task=9), r'--tasks_per_node=8 x --cpus_per_task=9 asks '
     r'72 CPUs per node, and the nodes of partition gpu have at most 64: '
     r'SLURM would hold the runs forever \(PartitionConfig\); lower '
     r'--cpus_per_task$'),
    (dict(gpus_per_node=16, tasks_per_node=1), r'--gpus_per_node=16 asks 16 '
     r'GPUs per node, .* at most 8: .*; lower --gpus_per_node$'),
    (dict(mem_gb=600), r'--mem_gb=600 asks 614400 MB of memory per node, '
     r'.* at most 515000'),
    (dict(nodes=3), r'--nodes=3: partition gpu has 2 nodes with what each '
     r'node is asked: SLURM would hold'),  # g3 has 4 GPUs only
  ]
  for change, message in refusals:
    with pytest.raises(ConfigError, match=message):
      slurm.check_fits(dataclasses.replace(fits, **change), gpu)
  slurm.check_fits(dataclasses.replace(fits, nodes=3, gpus_per_node=4), gpu)
  # Each ask fits some node, but no node fits both.
  mixed = slurm.read_sinfo('a|p*|64|9|gpu:4\nb|p*|32|9|gpu:8\n', None)
  with pytest.raises(ConfigError, match='--nodes=1: partition p has 0 nodes'):
    slurm.check_fits(dataclasses.replace(fits, nodes=1, cpus_per_task=5), mixed)
  slurm.check_fits(dataclasses.replace(fits, nodes=9), [])  # sinfo: no word


def test_a_submission_is_never_made_without_its_record():
  """Ctrl-C or SIGTERM during sbatch and the write of jobs.json waits
  until both are done, then stops the command as usual."""
  happened = []

  def on_term(signum, frame):
    happened.append('signal')
    raise KeyboardInterrupt

  previous = signal.signal(signal.SIGTERM, on_term)
  try:
    with pytest.raises(KeyboardInterrupt):
      with slurm._signals_held():
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        time.sleep(0.05)
        happened.append('record written')
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert happened == ['record written', 'signal']


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  yield from slurm_cluster.started(tmp_path_factory)


def test_slurm_array_requeued_mid_run_ends_as_sequential(
  cluster, sweep, sequential, tmp_path
):
  slurm = [
    '--launcher=slurm',
    '--gpus_per_node=0',
    '--cpus_per_task=1',
    '--time=20',
    '--poll_s=1',
  ]
  queued = reproduce(sweep, 'with_broken', tmp_path, *slurm, '--nowait',
                     **cluster)
  assert queued.returncode == 0, queued.stderr[-3000:]
  array = re.search(r'slurm job (\d+)', queued.stdout).group(1)
  assert 'submitted job array' in queued.stderr
  assert not (tmp_path / 'ledger.md').exists()  # --nowait: no ledger yet
  # Mid-run, after a checkpoint: the cluster requeues the plain net
  # (SIGTERM), and warns the residual one of its time limit (USR2, what
  # submitit's --signal sends), which saves, requeues itself and exits.
  for index, run in enumerate(PAIR):
    workdir = tmp_path / run / 'seed0'
    wait_for(
      lambda: any(s >= 6 for s, _ in losses(workdir)), f'{run} at step 6'
    )
  subprocess.run(
    ['scontrol', 'requeue', f'{array}_0'], env=cluster, check=True
  )
  subprocess.run(
    ['scancel', '--signal=USR2', f'{array}_1'], env=cluster, check=True
  )
  for index in (0, 1):
    slurm_cluster.wait_restarted(cluster, f'{array}_{index}')
  # The same command again: the pair, still queued, is not submitted
  # again (the failed run is, if it has failed by now); it waits, then
  # writes the ledger, and says that one run failed.
  collected = reproduce(sweep, 'with_broken', tmp_path, *slurm, **cluster)
  assert collected.returncode == 1, collected.stderr[-3000:]
  for index, run in enumerate(PAIR):  # queued still, or finished by now
    assert (
      f'{run} seed 0: already queued as job {array}_{index}' in collected.stderr
      or f'{run} seed 0: finished, skipped' in collected.stderr
    )
  assert 'submitted job array' not in collected.stderr or (
    ': 1 runs' in collected.stderr
  )
  assert '1 of 3 runs failed' in collected.stderr
  for run in PAIR:
    workdir = tmp_path / run / 'seed0'
    assert result(tmp_path, run)['error'] == result(sequential, run)['error']
    assert losses(workdir) == losses(sequential / run / 'seed0')
    log = (workdir / 'log.txt').read_text()
    assert 'restart 0' in log and 'restart 1' in log
    assert re.search(r'resuming .* from step ([5-9]|[1-3][0-9])\b', log)
  rows = {
    row.split('|')[1].strip(): row
    for row in (tmp_path / 'ledger.md').read_text().splitlines()
    if row.startswith('| ')
  }
  expected = (sequential / 'ledger.md').read_text()
  for run in PAIR:
    ours = rows[run].split('|')[1:7]
    theirs = [r for r in expected.splitlines() if r.startswith(f'| {run} ')]
    assert ours == theirs[0].split('|')[1:7]
  assert '| broken |' in rows['broken'] and ' failed ' in rows['broken']
  failure = json.loads((tmp_path / 'broken/seed0/failure.json').read_text())
  assert '/nonexistent/cifar' in failure['error']
  assert failure['log'].endswith('broken/seed0/log.txt')
  ledger = (tmp_path / 'ledger.md').read_text()
  assert f'- broken failed, seed 0: {failure["error"]}' in ledger
  # --collect: the ledger from what has ended, nothing submitted.
  again = reproduce(sweep, 'with_broken', tmp_path, *slurm, '--collect',
                    **cluster)
  assert again.returncode == 1 and 'submitted' not in again.stderr
  assert (tmp_path / 'ledger.md').read_text() == ledger
