"""Two processes on 127.0.0.1 (jax.distributed, gloo CPU collectives, two
host devices each) train like one process with four devices."""

import signal
import socket

import numpy as np

from tests.helpers import read_metrics
from tests.helpers import start_cli
from tests.helpers import tiny_config
from tests.helpers import tiny_flags
from tests.helpers import wait_for_step

FLAGS = tiny_flags(length=10, checkpoint_every=5, eval_every=10)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_two_processes(flags, workdir, command=('train.py',)):
  """`command` (train.py) as processes 0 and 1 of one jax.distributed job,
  two CPU devices each, meeting on a free port of 127.0.0.1."""
  port = free_port()
  return [
    start_cli(
      *command,
      *flags,
      f'--workdir={workdir}',
      devices=2,
      JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
      JAX_NUM_PROCESSES='2',
      JAX_PROCESS_ID=str(i),
    )
    for i in range(2)
  ]


def test_two_processes_match_one_with_the_same_devices(tmp_path):
  two, one = tmp_path / 'two', tmp_path / 'one'
  processes = start_two_processes(FLAGS, two)
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (_, stderr) in zip(processes, outputs):
    assert p.returncode == 0, stderr[-3000:]
  # One process with the same four devices, in-process.
  import jax

  from resnet_jax.train import loop

  config = tiny_config(length=10, checkpoint_every=5, eval_every=10)
  loop.train_and_evaluate(config, str(one), devices=jax.devices()[:4])

  a, b = read_metrics(two), read_metrics(one)
  assert [r['step'] for r in a] == [r['step'] for r in b] == list(range(1, 11))
  # The same batches and updates; only the order of the cross-process sums
  # differs, by float rounding that the steps compound: equal to 1e-4 over
  # the first three steps, to 1e-2 after ten (seen: 3e-5 with XLA's
  # optimisations, 2.5e-3 with the suite's unoptimised compiles).
  losses = [[r['loss'] for r in run] for run in (a, b)]
  np.testing.assert_allclose(losses[0][:3], losses[1][:3], rtol=1e-4)
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-2)
  val_a, val_b = (
    read_metrics(two, 'validation'),
    read_metrics(one, 'validation'),
  )
  assert val_a[0]['num_examples'] == val_b[0]['num_examples'] == 200
  # (After ten such steps the weights differ by that compounded rounding.)
  np.testing.assert_allclose(val_a[0]['loss'], val_b[0]['loss'], rtol=5e-2)
  assert sorted(p.name for p in (two / 'checkpoints').iterdir()) == ['10', '5']


def test_sigterm_to_one_process_saves_both_at_the_same_step(tmp_path):
  workdir = tmp_path / 'preempted'
  flags = [*FLAGS[:1], '--config.train.length=400', *FLAGS[2:]]
  processes = start_two_processes(flags, workdir)
  wait_for_step(processes[0], workdir, 6)
  processes[1].send_signal(signal.SIGTERM)  # only process 1 is told
  outputs = [p.communicate(timeout=300) for p in processes]
  assert [p.returncode for p in processes] == [143, 143], outputs[0][1][-2000:]
  saved = [
    next(line for line in stderr.splitlines() if 'run the same command' in line)
    for _, stderr in outputs
  ]
  steps = {int(line.split(' at step ')[1].split(':')[0]) for line in saved}
  assert len(steps) == 1  # both processes agreed on the step
  (step,) = steps
  assert 6 <= step < 400
  assert str(step) in [p.name for p in (workdir / 'checkpoints').iterdir()]


def test_two_processes_get_the_same_mean_and_their_rows_of_each_batch(
  tmp_path,
):
  """The training mean of an image folder, from a random sample that each
  process crops a share of: the same bytes on both processes and as one
  process computes it; each process's labels are its rows of the batch."""
  from resnet_jax.data import image_sets
  from resnet_jax.data import inputs
  from tests.helpers import REPO
  from tests.helpers import input_sample_config

  folder = REPO / 'data' / 'imagenet-sample'
  processes = start_two_processes(
    [], tmp_path, command=('tests/two_process_input.py', str(folder))
  )
  for p in processes:
    _, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
  config = input_sample_config(folder)
  mean = inputs.Streaming(config).pixel_mean()
  for i in range(2):
    assert np.load(tmp_path / f'mean_{i}.npy').tobytes() == mean.tobytes()
  one = image_sets.train_dataset(config.data, 8, config.train.seed)
  expected = np.stack([y for _, y in one.take(3).as_numpy_iterator()])
  halves = [np.load(tmp_path / f'labels_{i}.npy') for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves, axis=1), expected)
