"""One run per workdir (run_lock): a second command on a workdir that a
run holds is refused, the first goes on undisturbed, and evaluate and
predict read the newest finalised checkpoint meanwhile."""

import json
import os
import signal
import socket

import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.eval import predict
from resnet_jax.eval import saved_run
from resnet_jax.run import lock
from resnet_jax.run import saved_config
from tests.helpers import error_lines
from tests.helpers import read_metrics
from tests.helpers import run_cli
from tests.helpers import start_cli
from tests.helpers import tiny_flags
from tests.helpers import wait_for_step

FLAGS = tiny_flags(length=2000, checkpoint_every=4)


def test_a_second_run_is_refused_while_readers_read(tmp_path):
  workdir = tmp_path / 'run'
  first = start_cli('train.py', *FLAGS, f'--workdir={workdir}', devices=2)
  try:
    wait_for_step(first, workdir, 9)  # checkpoints 4 and 8 are saved
    before = sorted(os.listdir(workdir))
    second = run_cli('train.py', *FLAGS, f'--workdir={workdir}', devices=2)
    assert second.returncode == 2, second.stderr[-2000:]
    (line,) = error_lines(second.stderr)
    assert f'{workdir} is in use by another run (host ' in line
    assert f'{socket.gethostname()}, process {first.pid}, since 20' in line
    assert sorted(os.listdir(workdir)) == before
    # Readers meanwhile: the newest finalised checkpoint, read-only.
    config = saved_config.read(str(workdir))
    result = saved_run.evaluate_workdir(config, str(workdir))
    assert result['step'] >= 8 and result['step'] % 4 == 0
    assert result['num_examples'] == 200
    batch = tmp_path / 'batch.npy'
    np.save(batch, np.zeros((2, 32, 32, 3), np.float32))
    records = predict.predict(str(workdir), [str(batch)])
    assert [r['index'] for r in records] == [0, 1]
    assert first.poll() is None  # still training
  finally:
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
  assert first.returncode == 143, stderr[-2000:]
  steps = [r['step'] for r in read_metrics(workdir)]
  assert steps == list(range(1, len(steps) + 1))  # one writer only
  assert not any(
    p.endswith('.damaged') for p in os.listdir(workdir / 'checkpoints')
  )


def test_the_holder_is_named_and_released(tmp_path):
  with lock.hold(str(tmp_path)):
    who = json.loads((tmp_path / lock.NAME).read_text())
    assert who['pid'] == os.getpid() and who['host'] == socket.gethostname()
    with pytest.raises(ConfigError, match=f'process {os.getpid()}, since'):
      with lock.hold(str(tmp_path)):
        pass
  with lock.hold(str(tmp_path)):  # released at the end of the block
    pass
  assert (tmp_path / lock.NAME).read_text() == ''
