"""What XLA flags do to the suite's typical compiled program: the CIFAR
ResNet-8 training step of tests/helpers.tiny_config on 8 CPU devices,
compiled with JAX_DISABLE_MOST_OPTIMIZATIONS=1 and no compilation cache,
once per flag set, each in a process of its own (XLA reads its flags
once). Prints one JSON object per flag set: the seconds XLA took to
compile the step (JAX's backend-compile event), a step's time after the
first, and the sixth step's loss.

  python benchmarks/suite_time/compile_flags.py ['FLAGS' ...]

With no arguments: XLA's defaults, then the older elemental fusion
emitters (tests/conftest.py's choice where jaxlib has the flag).
"""

import json
import os
import subprocess
import sys
import time

DEFAULT_SETS = ('', '--xla_cpu_use_fusion_emitters=false')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def measure(flags: str) -> dict:
  """Runs in the child: the training loop's step, its compile timed by
  JAX's own event (XLA's backend compile, as run.sh records it)."""
  import jax

  from resnet_jax.train import loop
  from tests.helpers import tiny_config

  compiles = []

  def listen(event, seconds, **_):
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(seconds)

  exp = loop.setup(tiny_config(batch_size=16), jax.devices())
  state = loop.initial_state(exp)
  step = loop.train_fn(exp, 0)
  jax.monitoring.register_event_duration_secs_listener(listen)
  state, metrics = jax.block_until_ready(step(state))  # compiles
  compile_s = sum(compiles)
  start = time.perf_counter()
  for _ in range(5):
    state, metrics = jax.block_until_ready(step(state))
  return {
    'xla_flags': flags,
    'jax': jax.__version__,
    'compile_s': round(compile_s, 3),
    'programs_compiled': len(compiles),
    'step_s': round((time.perf_counter() - start) / 5, 4),
    'sixth_step_loss': float(metrics['loss']),
  }


def main(argv: list[str]) -> None:
  if argv[:1] == ['--child']:
    print(json.dumps(measure(argv[1])))
    return
  for flags in argv or DEFAULT_SETS:
    env = dict(
      os.environ,
      XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count=8',
      JAX_DISABLE_MOST_OPTIMIZATIONS='1',
      JAX_ENABLE_COMPILATION_CACHE='false',
      JAX_PLATFORMS='cpu',
      TF_CPP_MIN_LOG_LEVEL='2',
      PYTHONPATH=REPO,
    )
    child = subprocess.run(
      [sys.executable, __file__, '--child', flags],
      env=env,
      capture_output=True,
      text=True,
      check=False,
    )
    if child.returncode:
      sys.exit(f'XLA_FLAGS={flags!r} failed:\n{child.stderr[-2000:]}')
    print(child.stdout.strip().splitlines()[-1], flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
