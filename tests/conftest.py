"""Test environment: eight CPU devices for the multi-device tests (must be
set before JAX is imported), no accelerator for TensorFlow, XLA's
unoptimised (fast to compile) path, and one persistent compilation cache
for the whole session. Commands the tests start inherit the settings
(tests/helpers.py changes only their device count).

The cache: most tests compile the same few steps (a ResNet-8 on 8 CPU
devices); XLA's executables, keyed by their HLO and options, are written
once and read back by every later test and every command a test starts
(the environment carries the setting to subprocesses). Same executables,
so the same results, bit for bit.
"""

import gc
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR',
  os.path.join(tempfile.gettempdir(), f'resnet_jax_tests_{os.getuid()}'),
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
# Compiling, not running, is what the suite's tiny steps spend their time
# on: XLA's cheap path halves it (as flax's own tests do). Every process
# of the session compiles the same way, so runs still compare bit for bit.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')


# XLA's CPU fusions through its older elemental emitters compile the
# suite's steps in a third of the time of the MLIR fusion emitters
# (benchmarks/suite_time/compile_flags.py). jaxlib has the switch up to
# 0.11.0 (an unknown XLA flag aborts a process), and with it a step run K
# times inside one call is no longer bit-identical to K calls: the tests
# of that promise carry the mark `xla_default_emitters` and run in a
# process of their own with XLA's defaults (pytest_pyfunc_call below).
# Mutation runs (MUTANT_UNDER_TEST) keep the defaults: mutmut must see
# every test in process.
ELEMENTAL = '--xla_cpu_use_fusion_emitters=false'


def _jaxlib_has_the_emitters_switch() -> bool:
  from importlib import metadata

  from packaging.version import Version

  return Version(metadata.version('jaxlib')) <= Version('0.11.0')


if (
  'xla_cpu_use_fusion_emitters' not in os.environ['XLA_FLAGS']
  and 'MUTANT_UNDER_TEST' not in os.environ
  and _jaxlib_has_the_emitters_switch()
):
  os.environ['XLA_FLAGS'] += f' {ELEMENTAL}'

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pytest_collection_finish(session):
  """What the collection imported (JAX, Flax, TensorFlow, every test
  module: millions of objects) lives as long as the worker: frozen out of
  the garbage collector's passes, which otherwise walk it again and again
  while tests trace their nets, and full passes made rarer.
  tests/test_resnet.py and tests/test_counting.py in one process on the
  2-core VM: 80.1 and 81.2 s without, 62.8 and 56.9 s with, alternating
  (docs/testing.md)."""
  gc.collect()
  gc.freeze()
  gc.set_threshold(10_000, 50, 50)


# The test files by their time in a cold run, longest first (docs/testing.md,
# "The suite's time"); the rest follow in name order. With `--dist
# loadfile --no-loadscope-reorder` (pyproject.toml) each worker takes the
# next file in this order when it is free, so the run ends on short files
# instead of one worker finishing a long one alone. A stale order costs
# only time.
LONGEST_FIRST = (
  'test_resume.py',
  'test_launch.py',
  'test_evaluator.py',
  'test_image_sets.py',
  'test_loop.py',
  'test_distill.py',
  'test_finetune.py',
  'test_combinations.py',
  'test_parallel.py',
  'test_resnet.py',
  'test_steps.py',
  'test_counting.py',
  'test_augment.py',
  'test_package.py',
  'test_errors.py',
  'test_checkpoint.py',
  'test_without_tensorflow.py',
  'test_reproduce.py',
  'test_torch_convert.py',
  'test_auto_augment.py',
  'test_lock.py',
)


def pytest_collection_modifyitems(items):
  """The files longest first (LONGEST_FIRST), each file's tests in their
  order. Under mutmut (docs/testing.md, "Mutation testing"), a mutant's
  tests fastest first instead, by the times of mutmut's own clean run:
  with -x it dies at its cheapest failing test instead of after a slow
  one that passes."""
  if os.environ.get('MUTANT_UNDER_TEST', 'stats') in ('stats', 'fail', ''):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    return
  import json

  stats = REPO / 'mutmut-stats.json'  # REPO is mutants/ there
  if not stats.exists():
    return
  seconds = json.loads(stats.read_text())['duration_by_test']
  items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))


def pytest_configure(config):
  config.addinivalue_line(
    'markers',
    'cluster: needs a two-node SLURM cluster or many processes; minutes '
    "(run by .ci/run beside the suite: pytest -m cluster)",
  )
  config.addinivalue_line(
    'markers',
    "xla_default_emitters: runs with XLA's default CPU fusion emitters "
    '(in a process of its own where the session uses the elemental ones)',
  )


def pytest_pyfunc_call(pyfuncitem):
  """A test marked `xla_default_emitters`, in a session compiling with the
  elemental emitters: the same test run by pytest in a child process with
  XLA's defaults; its failure report is the child's. The child is handed
  the parent's fixture values that are strings (a trained teacher's
  workdir: tests/helpers.py's `from_parent`), not made again."""
  flags = os.environ['XLA_FLAGS']
  if ELEMENTAL not in flags or not pyfuncitem.get_closest_marker(
    'xla_default_emitters'
  ):
    return None
  made = {k: v for k, v in pyfuncitem.funcargs.items() if isinstance(v, str)}
  child = subprocess.run(
    [sys.executable, '-m', 'pytest', '-n0', '-p', 'no:cacheprovider']
    + ['-q', pyfuncitem.nodeid],
    cwd=REPO,
    env=dict(
      os.environ,
      XLA_FLAGS=flags.replace(ELEMENTAL, '--xla_cpu_use_fusion_emitters=true'),
      RESNET_JAX_TESTS_FROM_PARENT=json.dumps(made),
    ),
    capture_output=True,
    text=True,
    check=False,
  )
  if child.returncode:
    pytest.fail(
      f"{pyfuncitem.nodeid} with XLA's default emitters, in a child "
      f'process:\n{child.stdout[-6000:]}{child.stderr[-2000:]}',
      pytrace=False,
    )
  return True
