"""One run on two SLURM nodes against the same run on one node with the
same number of processes, on a real two-node cluster started on this host
(tests/slurm_cluster.py: two slurmd daemons, each declaring 4 CPUs);
prints JSON.

  python benchmarks/multinode.py [--steps=60] [--batch=64] [--processes=4]

The run: `reproduce`'s ResNet-20 on the bundled CIFAR-10 sample, `steps`
steps at batch `batch`, every process one CPU device (jax.distributed,
gloo collectives); first `--nodes=1 --tasks_per_node=P`, then `--nodes=2
--tasks_per_node=P/2`, each in a fresh folder without a compilation cache,
so each process compiles what it runs, as on a real cluster. For each: the
seconds from the command's start to the first step's log line (submission,
SLURM's start, the processes' imports, jax.distributed, data, compile),
the training images/s (median over the logged steps after the first 5),
the whole command's seconds, and the error (equal up to the rounding of
cross-process sums: the shape changes where the run trains, not what it
computes). Then the two-node run once more, one process (rank 3, on the
second node) SIGKILLed at step 10: the seconds from the kill until SLURM
says the job has ended (srun's --kill-on-bad-exit, then SLURM's KillWait,
30 s). Needs root and Debian's slurm-wlm and munge.
"""

import argparse
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import slurm_cluster  # noqa: E402

SWEEP = """
from resnet_jax.paper.experiments import Experiment, PlannedRun

EXPERIMENTS = {
  'one': Experiment('ResNet-20', (PlannedRun('resnet20', 'configs/cifar10.py:resnet20'),)),
}
"""


def command(sweep, root, env, nodes, per_node, steps, batch):
  """reproduce's command line and environment for the run."""
  env = {
    k: v
    for k, v in env.items()
    if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT'))
  }
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
  args = [
    sys.executable,
    '-m',
    'resnet_jax.reproduce',
    f'{sweep}:one',
    f'--workdir={root}',
    '--launcher=slurm',
    f'--nodes={nodes}',
    f'--tasks_per_node={per_node}',
    '--gpus_per_node=0',
    '--cpus_per_task=1',
    '--time=60',
    '--poll_s=1',
    f'--set=data.local_dir={REPO / "data" / "cifar10-sample"}',
    '--set=data.validation_size=200',
    '--set=data.eval_on=validation',
    f'--set=train.batch_size={batch}',
    f'--set=train.length={steps}',
    f'--set=train.eval_every={steps}',
    '--set=train.log_every=1',
    f'--set=train.checkpoint_every={steps}',
  ]
  return args, env


def run(sweep, root, env, nodes, per_node, steps, batch) -> dict:
  args, env = command(sweep, root, env, nodes, per_node, steps, batch)
  start = time.time()
  subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
  wall = time.time() - start
  workdir = pathlib.Path(root) / 'resnet20' / 'seed0'
  records = [
    json.loads(line)
    for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]
  train = [r for r in records if r['kind'] == 'train']
  result = json.loads((workdir / 'result.json').read_text())
  return dict(
    nodes=nodes,
    processes=nodes * per_node,
    devices=result['devices'],
    submit_to_first_step_s=round(train[0]['time'] - start, 1),
    images_per_sec=round(
      statistics.median(r['images_per_sec'] for r in train[5:]), 1
    ),
    wall_s=round(wall, 1),
    error=result['error'],
  )


def killed(sweep, root, env, steps, batch) -> float:
  """Seconds from a SIGKILL of rank 3 at step 10 to the job's end."""
  args, run_env = command(sweep, root, env, 2, 2, steps, batch)
  out = subprocess.run(
    [*args, '--nowait'],
    cwd=REPO,
    env=run_env,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  job = re.search(r'slurm job (\d+)', out).group(1)
  workdir = pathlib.Path(root) / 'resnet20' / 'seed0'
  metrics = workdir / 'metrics.jsonl'
  while not metrics.exists() or metrics.read_text().count('"train"') < 10:
    time.sleep(0.2)
  line = re.search(
    r'^process 3 of 4 .*pid (\d+)\)',
    (workdir / 'log.rank3.txt').read_text(),
    re.M,
  )
  os.kill(int(line.group(1)), signal.SIGKILL)
  start = time.time()
  while slurm_cluster.job(env, job).get('JobState') in (
    'RUNNING',
    'COMPLETING',
  ):
    time.sleep(0.2)
  return round(time.time() - start, 1)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int, default=60)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--processes', type=int, default=4)
  a = parser.parse_args()
  why = slurm_cluster.missing()
  if why:
    sys.exit(f'a two-node SLURM cluster {why}')
  with tempfile.TemporaryDirectory() as tmp:
    sweep = os.path.join(tmp, 'sweep.py')
    with open(sweep, 'w') as f:
      f.write(SWEEP)
    per_node = a.processes
    with slurm_cluster.cluster(
      os.path.join(tmp, 'slurm'), ('rjn1', 'rjn2'), cpus=per_node
    ) as env:
      one = run(sweep, f'{tmp}/one', env, 1, per_node, a.steps, a.batch)
      two = run(sweep, f'{tmp}/two', env, 2, per_node // 2, a.steps, a.batch)
      kill_to_end = killed(sweep, f'{tmp}/kill', env, a.steps, a.batch)
  print(
    json.dumps(
      dict(
        steps=a.steps,
        batch=a.batch,
        cpus=os.cpu_count(),
        one_node=one,
        two_nodes=two,
        throughput_ratio=round(
          two['images_per_sec'] / one['images_per_sec'], 3
        ),
        kill_to_job_end_s=kill_to_end,
      )
    )
  )


if __name__ == '__main__':
  main()
