"""Never lose a run: kills, preemption, damaged checkpoints, NaN,
changed configs, other device counts. All on CPU with 8 host devices."""

import os
import random
import shutil
import signal

from absl import logging
import jax
import numpy as np
import pytest

from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.errors import Stopped
from resnet_jax.eval import saved_run
from resnet_jax.run import checkpoint
from resnet_jax.run import resume
from resnet_jax.run import saved_config
from resnet_jax.train import loop
from tests.helpers import REPO
from tests.helpers import SAMPLE
from tests.helpers import error_lines
from tests.helpers import few_devices
from tests.helpers import read_metrics
from tests.helpers import run_cli
from tests.helpers import start_cli
from tests.helpers import tiny_config
from tests.helpers import tiny_flags
from tests.helpers import wait_for_step

LENGTH = 30
FLAGS = tiny_flags(length=LENGTH, checkpoint_every=5)


def config_for(length=LENGTH, **train):
  """The in-process twin of FLAGS."""
  return tiny_config(**dict(dict(length=length, checkpoint_every=5), **train))


def final_state(workdir, config=None):
  config = config or config_for()
  exp = loop.setup(config)
  mgr = checkpoint.manager(str(workdir), 3, read_only=True)
  return jax.device_get(
    resume.restore_newest_readable(
      mgr, loop.initial_state(exp), str(workdir / 'checkpoints')
    )
  )


def losses(workdir):
  return [(r['step'], r['loss']) for r in read_metrics(workdir)]


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  result = run_cli('train.py', *FLAGS, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  return workdir


def assert_same_run(workdir, reference):
  a, b = final_state(workdir), final_state(reference)
  assert int(a.step) == int(b.step) == LENGTH
  jax.tree.map(np.testing.assert_array_equal, a, b)  # bit-identical
  assert losses(workdir) == losses(reference)  # and the same log


def test_sigkill_at_a_random_step_then_rerun_is_bit_identical(
  uninterrupted, tmp_path
):
  workdir = tmp_path / 'killed'
  kill_at = random.Random().randint(6, LENGTH - 4)
  process = start_cli('train.py', *FLAGS, f'--workdir={workdir}')
  wait_for_step(process, workdir, kill_at)
  process.kill()  # SIGKILL: no handler, no cleanup
  process.wait()
  assert read_metrics(workdir)[-1]['step'] < LENGTH, 'finished before kill'
  result = run_cli('train.py', *FLAGS, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  assert_same_run(workdir, uninterrupted)


@pytest.mark.parametrize(
  'sig,code,resume', [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)]
)
def test_preemption_saves_at_the_current_step_and_resumes(
  uninterrupted, tmp_path, sig, code, resume
):
  """SIGTERM (schedulers) and SIGINT (Ctrl-C) take the same path; the
  resume after it is checked once, for SIGTERM."""
  workdir = tmp_path / 'preempted'
  process = start_cli('train.py', *FLAGS, f'--workdir={workdir}')
  wait_for_step(process, workdir, 7)
  process.send_signal(sig)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == code, stderr
  line = [x for x in stderr.splitlines() if 'run the same command' in x]
  assert len(line) == 1 and signal.Signals(sig).name in line[0], stderr
  saved = int(line[0].split(' at step ')[1].split(':')[0])
  assert saved >= 7 and str(saved) in os.listdir(workdir / 'checkpoints')
  if not resume:
    return
  result = run_cli('train.py', *FLAGS, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr
  assert_same_run(workdir, uninterrupted)


@pytest.fixture(scope='module')
def trained_to_10(tmp_path_factory):
  """A run trained once for the module, with checkpoints at 5 and 10."""
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  loop.train_and_evaluate(config_for(length=10), str(workdir))
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '5']
  return workdir


@pytest.fixture
def two_checkpoints(trained_to_10, tmp_path):
  """A copy of that run of this test's own, to damage."""
  return shutil.copytree(trained_to_10, tmp_path / 'run')


def _damage(step_dir, how):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  if how == 'truncated':
    biggest = max(files, key=os.path.getsize)
    with open(biggest, 'r+b') as f:
      f.truncate(os.path.getsize(biggest) // 2)
  elif how == 'missing':
    os.remove(os.path.join(step_dir, 'default', '_METADATA'))
  elif how == 'garbled':
    path = os.path.join(step_dir, 'default', 'manifest.ocdbt')
    with open(path, 'r+b') as f:
      f.write(b'\0' * os.path.getsize(path))


@pytest.mark.parametrize('how', ['truncated', 'missing', 'garbled'])
def test_damaged_checkpoint_is_named_and_skipped(two_checkpoints, how, caplog):
  workdir = two_checkpoints
  _damage(workdir / 'checkpoints' / '10', how)
  with caplog.at_level(logging.WARNING):
    state = final_state(workdir, config_for(length=10))
  assert int(state.step) == 5
  assert any(
    str(workdir / 'checkpoints' / '10') in r.getMessage()
    for r in caplog.records
  )
  assert os.path.isdir(workdir / 'checkpoints' / '10.damaged')  # kept
  # Training resumes from 5 and ends where it would have.
  result = loop.train_and_evaluate(config_for(length=10), str(workdir))
  assert result['step'] == 10
  assert [s for s, _ in losses(workdir)] == list(range(1, 11))
  assert int(final_state(workdir, config_for(length=10)).step) == 10


def test_checkpoint_interrupted_mid_write_is_never_restored(two_checkpoints):
  workdir = two_checkpoints
  # What a kill during a save leaves: a temporary folder, never finalised.
  shutil.copytree(
    workdir / 'checkpoints' / '10',
    workdir / 'checkpoints' / '15.orbax-checkpoint-tmp',
  )
  os.remove(
    workdir / 'checkpoints' / '15.orbax-checkpoint-tmp' / 'commit_success.txt'
  )
  assert int(final_state(workdir, config_for(length=10)).step) == 10


def test_no_readable_checkpoint_stops_and_keeps_everything(two_checkpoints):
  workdir = two_checkpoints
  for step in ('5', '10'):
    _damage(workdir / 'checkpoints' / step, 'missing')
  before = sorted(p for p, _, _ in os.walk(workdir))
  result = run_cli(
    'train.py',
    *FLAGS[:1],
    '--config.train.length=10',
    '--config.train.log_every=1',
    '--config.train.checkpoint_every=5',
    '--config.train.eval_every=1000',
    '--config.train.batch_size=16',
    f'--workdir={workdir}',
  )
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert len(errors) == 1 and 'no readable checkpoint among 2' in errors[0]
  assert 'refusing to train from scratch' in errors[0]
  assert sorted(p for p, _, _ in os.walk(workdir)) == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = config_for(length=20, checkpoint_every=2)
  # Sane until update 6 (a constant warm-up), then a learning rate that
  # blows the weights up.
  config.optim.update(warmup='constant', warmup_steps=6, warmup_lr=0.1)
  config.optim.lr = 1e35
  with pytest.raises(Stopped) as stopped:
    loop.train_and_evaluate(config, str(tmp_path))
  message, code = str(stopped.value), stopped.value.exit_code
  assert code == 3 and 'non-finite' in message and 'at step' in message
  good = message.split('checkpoints/')[1].split(',')[0]
  assert int(good) <= 6 and 'is kept' in message
  assert sorted(map(int, os.listdir(tmp_path / 'checkpoints')))[-1] == int(good)
  state = final_state(tmp_path, config)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_changed_experiment_is_refused_safe_changes_allowed(
  uninterrupted, tmp_path
):
  workdir = tmp_path / 'copy'
  shutil.copytree(uninterrupted, workdir)
  saved = (workdir / 'config.json').read_text()
  # The command: one line, exit status 2, nothing written.
  result = run_cli(
    'train.py', *FLAGS, '--config.model.shortcut=B', f'--workdir={workdir}'
  )
  assert result.returncode == 2
  errors = error_lines(result.stderr)
  assert len(errors) == 1 and 'model.shortcut' in errors[0], result.stderr
  assert 'cannot resume' in errors[0]
  assert (workdir / 'config.json').read_text() == saved
  # Other changes of the experiment: the same refusal, in-process.
  for key, value in [('data.name', 'cifar100'), ('optim.lr', 0.2)]:
    config = config_for()
    section, name = key.split('.')
    config[section][name] = value
    with pytest.raises(ConfigError, match=f'cannot resume .*: {key}'):
      loop.train_and_evaluate(config, str(workdir))
    assert (workdir / 'config.json').read_text() == saved
  result = run_cli(
    'train.py',
    *FLAGS,
    f'--config.train.length={LENGTH + 4}',
    '--config.train.eval_every=7',
    f'--workdir={workdir}',
  )
  assert result.returncode == 0, result.stderr
  assert read_metrics(workdir)[-1]['step'] == LENGTH + 4


@pytest.mark.parametrize('devices', [2, 1])
def test_checkpoint_from_8_devices_resumes_on_fewer(
  uninterrupted, tmp_path, devices
):
  workdir = tmp_path / 'fewer'
  shutil.copytree(uninterrupted, workdir)
  result = run_cli(
    'train.py',
    *FLAGS,
    f'--config.train.length={LENGTH + 5}',
    f'--workdir={workdir}',
    devices=devices,
  )
  assert result.returncode == 0, result.stderr
  records = read_metrics(workdir)
  assert [r['step'] for r in records] == list(range(1, LENGTH + 6))
  assert all(np.isfinite(r['loss']) for r in records)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a folder')
  with pytest.raises(ConfigError, match='exists and is not a directory'):
    loop.train_and_evaluate(config_for(), str(blocker))
  with pytest.raises(ConfigError, match='cannot write to --workdir'):
    loop.train_and_evaluate(config_for(), str(blocker / 'sub'))
  assert blocker.read_text() == 'not a folder'


OLD_WORKDIR = REPO / 'tests' / 'data' / 'workdir_7f91617'


def test_a_workdir_written_before_the_reorganisation_evaluates_and_resumes(
  tmp_path,
):
  """tests/data/workdir_7f91617: the quickstart's ResNet-8 trained for 4
  steps by commit 7f91617 (before the folders, the lock, the saved list
  of files and model.bn_frozen). It evaluates to what it logged, and
  resumes."""
  from resnet_jax.eval import saved_run
  from resnet_jax.run import saved_config

  workdir = tmp_path / 'old'
  shutil.copytree(OLD_WORKDIR, workdir)
  logged = read_metrics(workdir, 'validation')[-1]
  config = saved_config.read(str(workdir))
  config.data.local_dir = str(SAMPLE)  # it was trained from another checkout
  result = saved_run.evaluate_workdir(config, str(workdir))
  assert result['step'] == 4 and result['num_examples'] == 200
  assert result['loss'] == pytest.approx(logged['loss'], rel=1e-3)
  config = tiny_config(length=6, log_every=2, checkpoint_every=4, eval_every=4)
  assert loop.train_and_evaluate(config, str(workdir))['step'] == 6
  assert [r['step'] for r in read_metrics(workdir)] == [2, 4, 6]


def _every_switch(length, **train):
  """The tiny run with every refinement on at once."""
  config = config_for(length=length, checkpoint_every=2, **train)
  config.data.update(mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.8)
  config.optim.update(label_smoothing=0.1, optimizer='lars', clip_grad_norm=1.0)
  config.model.update(shortcut='D', zero_init_residual=True)
  config.train.update(ema_decay=0.9, ema_warmup=True)
  return config


def test_every_switch_on_resumes_bit_identical_and_a_trace_changes_nothing(
  tmp_path,
):
  traced, resumed = tmp_path / 'traced', tmp_path / 'resumed'
  # Uninterrupted, tracing step 2 for the profiler.
  whole = loop.train_and_evaluate(
    _every_switch(4, profile_steps=(1, 2)), str(traced), few_devices()
  )
  # The same run stopped after step 2: its workdir as it was then (the
  # checkpoint at 2; the log is cut back when it resumes).
  shutil.copytree(traced, resumed)
  shutil.rmtree(resumed / 'checkpoints' / '4')
  shutil.rmtree(resumed / 'tensorboard')
  again = loop.train_and_evaluate(_every_switch(4), str(resumed), few_devices())
  timing = 'steady_images_per_sec'
  assert {k: v for k, v in whole.items() if k != timing} == {
    k: v for k, v in again.items() if k != timing
  }
  assert 'ema' in whole
  a, b = (final_state(w, _every_switch(4)) for w in (traced, resumed))
  assert int(a.step) == 4
  jax.tree.map(np.testing.assert_array_equal, a, b)  # bit-identical
  assert losses(traced) == losses(resumed)
  profile = list((traced / 'tensorboard' / 'plugins' / 'profile').glob('*'))
  assert len(profile) == 1
  names = {p.name for p in profile[0].iterdir()}
  assert any(n.endswith('.xplane.pb') for n in names), names
  assert 'perfetto_trace.json.gz' in names
  assert not (resumed / 'tensorboard' / 'plugins').exists()
  # The average is what evaluate gives with --weights=ema.
  config = saved_config.read(str(resumed))
  result = saved_run.evaluate_workdir(config, str(resumed), weights='ema')
  assert result['loss'] == pytest.approx(whole['ema']['loss'], rel=1e-6)
  assert result['loss'] != pytest.approx(whole['loss'], rel=1e-6)


def test_workdirs_saved_by_older_releases_read_with_todays_keys():
  """The committed results' workdirs (docs/results, saved from 2026-11-23
  on, before many keys existed) read back with exactly the keys their
  config file has today: a key added to the configs without its
  `added` in config/keys.py would make every older workdir another
  experiment."""
  import json

  from tests.helpers import load_config

  saved = sorted((REPO / 'docs' / 'results').glob('*/*/seed*/config.json'))
  assert len(saved) >= 8
  for path in saved:
    result = json.loads((path.parent / 'result.json').read_text())
    old = keys.flatten(saved_config.read(str(path.parent)).to_dict())
    now = keys.flatten(load_config(result['config']).to_dict())
    assert old.keys() == now.keys(), (path, old.keys() ^ now.keys())
