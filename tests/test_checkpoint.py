"""A failed write (a full disk) ends a run with one `error:` line naming
the path, exit status 74, the finalised checkpoints untouched; the same
command resumes once there is space again."""

import builtins
import errno
import shutil
import subprocess
import sys

import pytest

from resnet_jax.errors import WriteFailed
from resnet_jax.train import loop
from tests.helpers import REPO
from tests.helpers import error_lines
from tests.helpers import load_config
from tests.helpers import read_metrics

FLAGS = (
  '--config=configs/quickstart.py:resnet8 --config.train.length={length} '
  '--config.train.log_every=20 --config.train.checkpoint_every=20 '
  '--config.train.eval_every=100000 --config.train.batch_size=16'
)
# In a mount namespace of its own, on a tmpfs of 8 MB: train, fill the disk
# once the first checkpoint is final, see the run end; free the space, run
# the same command again.
SCRIPT = """
set -u
mount -t tmpfs -o size=8m tmpfs {mnt}
cd {repo}
{python} train.py {flags} --workdir={mnt}/run >{out}/out1 2>{out}/err1 &
while [ ! -d {mnt}/run/checkpoints/20 ]; do sleep 0.1; done
dd if=/dev/zero of={mnt}/filler bs=64k 2>/dev/null
wait $!; echo $? >{out}/rc1
ls {mnt}/run/checkpoints >{out}/ls1
rm {mnt}/filler
{python} train.py {flags} --workdir={mnt}/run >{out}/out2 2>{out}/err2
echo $? >{out}/rc2
cp {mnt}/run/metrics.jsonl {out}/
"""


def can_mount_a_tmpfs(tmp_path) -> bool:
  if not shutil.which('unshare'):
    return False
  probe = subprocess.run(
    ['unshare', '-rm', 'sh', '-c', f'mount -t tmpfs tmpfs {tmp_path}'],
    capture_output=True,
  )
  return probe.returncode == 0


def test_a_disk_that_fills_during_a_checkpoint(tmp_path):
  (tmp_path / 'mnt').mkdir()
  (tmp_path / 'out').mkdir()
  if not can_mount_a_tmpfs(tmp_path / 'mnt'):
    pytest.skip('no user namespaces here to make a small file system in')
  script = SCRIPT.format(
    mnt=tmp_path / 'mnt',
    out=tmp_path / 'out',
    repo=REPO,
    python=sys.executable,
    flags=FLAGS.format(length=400),
  ).replace('train.py {flags}', '')
  # The rerun is the same command, shortened to finish soon.
  script = script.replace(
    f'--workdir={tmp_path / "mnt"}/run >{tmp_path / "out"}/out2',
    f'--workdir={tmp_path / "mnt"}/run --config.train.length=60 '
    f'>{tmp_path / "out"}/out2',
  )
  subprocess.run(['unshare', '-rm', 'sh', '-c', script], timeout=400)
  out = tmp_path / 'out'
  stderr = (out / 'err1').read_text()
  assert (out / 'rc1').read_text().strip() == '74', stderr[-3000:]
  (line,) = error_lines(stderr)
  assert f'could not write {tmp_path}/mnt/run/checkpoints/' in line
  assert '(No space left on device: 0.0 MB free, a checkpoint takes' in line
  assert 'Traceback' not in stderr  # found before Orbax began writing
  assert '20' in (out / 'ls1').read_text().split()  # untouched
  assert (out / 'rc2').read_text().strip() == '0', (out / 'err2').read_text()
  steps = [r['step'] for r in read_metrics(out)]
  assert steps == [20, 40, 60]  # resumed from 20, logged once each


def no_space_for(name: str, monkeypatch):
  """Every write to a file whose name contains `name` fails: ENOSPC."""
  real_open = builtins.open

  class Full:
    def __init__(self, f):
      self._f = f

    def write(self, data):
      raise OSError(errno.ENOSPC, 'No space left on device')

    def __getattr__(self, attr):
      return getattr(self._f, attr)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._f.close()

  def fake_open(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if name in str(file) and any(m in mode for m in 'wa'):
      return Full(f)
    return f

  monkeypatch.setattr(builtins, 'open', fake_open)


@pytest.mark.parametrize(
  'name,what,named',
  [
    ('config.json', 'writing the config', 'config.json'),
    ('metrics.jsonl', 'logging metrics', 'metrics.jsonl'),
    ('tfevents', 'creating the TensorBoard log', 'tensorboard'),
  ],
)
def test_a_failed_write_names_the_file(
  tmp_path, monkeypatch, name, what, named
):
  config = load_config('configs/quickstart.py:resnet8')
  config.train.update(length=2, log_every=1, checkpoint_every=1)
  config.train.batch_size = 16
  workdir = tmp_path / 'run'
  no_space_for(name, monkeypatch)
  with pytest.raises(WriteFailed) as failed:
    loop.train_and_evaluate(config, str(workdir))
  message = str(failed.value)
  assert message.startswith(f'error: {what}: could not write {workdir}/')
  assert named in message and '(No space left on device)' in message
  assert failed.value.exit_code == 74


def test_a_save_writes_each_replicated_array_whole(tmp_path):
  """Orbax's replica-parallel save slices every replicated array across
  the devices first, compiling a slice per shape; run/checkpoint turns it
  off: a save of a state replicated on 8 devices compiles nothing, and
  reads back equal."""
  import jax
  import numpy as np

  from resnet_jax import parallel
  from resnet_jax.run import checkpoint

  mesh = parallel.make_mesh()
  assert mesh.size == 8
  state = parallel.replicate(
    mesh,
    {
      'kernel': np.arange(3 * 3 * 16 * 24, dtype=np.float32).reshape(
        3, 3, 16, 24
      ),
      'scale': np.linspace(0, 1, 40, dtype=np.float32),
    },
  )
  compiles = []

  def listen(event, seconds, **_):
    if 'compile' in event:
      compiles.append(event)

  saver = checkpoint.Saver(checkpoint.manager(str(tmp_path), keep=1))
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    saver.save(3, state)
    saver.wait()
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert compiles == []
  reader = checkpoint.manager(str(tmp_path), keep=1, read_only=True)
  restored = reader.restore(3)
  for name, array in state.items():
    np.testing.assert_array_equal(restored[name], np.asarray(array))
