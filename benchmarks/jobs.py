"""Wall-clock of the same runs one after another (--jobs=1) and at once
(--jobs=N, each a process of its own), with `reproduce`; prints JSON.

  python benchmarks/jobs.py [--jobs=2] [--steps=200] [--batch=64]

The runs: Figure 6's plain-20 and ResNet-20 on the bundled CIFAR-10
sample (real images and labels), `steps` steps each at batch `batch`, one
CPU host device per run; each mode in a fresh folder and with no
compilation cache, so each process compiles what it runs, as a real sweep
does. A JSON line: seconds of each mode, their ratio, the errors (which
must be equal: the launcher changes where a run trains, not what it
computes).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def reproduce(root: str, jobs: int, steps: int, batch: int) -> float:
  env = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(('JAX_COMPILATION_CACHE', 'JAX_PERSISTENT'))
  }
  env['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
  args = [
    sys.executable,
    '-m',
    'resnet_jax.reproduce',
    'cifar_figure6',
    '--runs=plain20,resnet20',
    f'--workdir={root}',
    f'--jobs={jobs}',
    '--devices_per_job=1',
    f'--set=data.local_dir={REPO / "data" / "cifar10-sample"}',
    '--set=data.validation_size=200',
    '--set=data.eval_on=validation',
    f'--set=train.batch_size={batch}',
    f'--set=train.length={steps}',
    f'--set=train.eval_every={steps}',
    f'--set=train.log_every={steps}',
    f'--set=train.checkpoint_every={steps}',
  ]
  start = time.perf_counter()
  subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
  return time.perf_counter() - start


def errors(root: str) -> dict:
  out = {}
  for run in ('plain20', 'resnet20'):
    with open(os.path.join(root, run, 'seed0', 'result.json')) as f:
      out[run] = json.load(f)['error']
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--jobs', type=int, default=2)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--batch', type=int, default=64)
  a = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    one, many = os.path.join(tmp, 'jobs1'), os.path.join(tmp, 'jobsN')
    t1 = reproduce(one, 1, a.steps, a.batch)
    tn = reproduce(many, a.jobs, a.steps, a.batch)
    result = dict(
      runs=2,
      steps=a.steps,
      batch=a.batch,
      cores=len(os.sched_getaffinity(0)),
      jobs=a.jobs,
      jobs1_s=round(t1, 1),
      jobsN_s=round(tn, 1),
      speedup=round(t1 / tn, 2),
      errors_jobs1=errors(one),
      errors_jobsN=errors(many),
    )
  print(json.dumps(result))


if __name__ == '__main__':
  main()
