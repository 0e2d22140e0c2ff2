"""reproduce's launchers: several runs at once on this machine, each a
process on devices of its own, and a job array on a real one-node SLURM
cluster (tests/slurm_cluster.py), requeued mid-run; both ledgers equal to
the same runs made one after another, bit for bit."""

import json
import re
import subprocess
import sys

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


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  why = slurm_cluster.missing()
  if why:
    pytest.skip(f'a one-node SLURM cluster {why}')
  with slurm_cluster.cluster(str(tmp_path_factory.mktemp('slurm'))) as env:
    yield env


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
