"""Two processes on 127.0.0.1 (jax.distributed, gloo CPU collectives, two
host devices each) train like one process with four devices (issue 4)."""

import socket

import numpy as np

from tests.helpers import read_metrics
from tests.helpers import run_cli
from tests.helpers import start_cli

FLAGS = [
  '--config=configs/quickstart.py:resnet8',
  '--config.train.length=10',
  '--config.train.log_every=1',
  '--config.train.checkpoint_every=5',
  '--config.train.eval_every=10',
  '--config.train.batch_size=16',
]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one_with_the_same_devices(tmp_path):
  two, one = tmp_path / 'two', tmp_path / 'one'
  port = free_port()
  processes = [
    start_cli(
      'train.py',
      *FLAGS,
      f'--workdir={two}',
      devices=2,
      JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
      JAX_NUM_PROCESSES='2',
      JAX_PROCESS_ID=str(i),
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, stderr) in zip(processes, outputs):
    assert p.returncode == 0, stderr[-3000:]
  result = run_cli('train.py', *FLAGS, f'--workdir={one}', devices=4)
  assert result.returncode == 0, result.stderr

  a, b = read_metrics(two), read_metrics(one)
  assert [r['step'] for r in a] == [r['step'] for r in b] == list(range(1, 11))
  # The same batches and updates; only the order of the cross-process sums
  # differs, by float rounding.
  np.testing.assert_allclose(
    [r['loss'] for r in a], [r['loss'] for r in b], rtol=1e-5
  )
  val_a, val_b = (
    read_metrics(two, 'validation'),
    read_metrics(one, 'validation'),
  )
  assert val_a[0]['num_examples'] == val_b[0]['num_examples'] == 200
  np.testing.assert_allclose(val_a[0]['loss'], val_b[0]['loss'], rtol=1e-2)
  assert sorted(p.name for p in (two / 'checkpoints').iterdir()) == ['10', '5']
