"""Test environment: eight CPU devices for the multi-device tests (must be
set before JAX is imported), no accelerator for TensorFlow, XLA's
unoptimised (fast to compile) path, and one persistent compilation cache
for the whole session.

The cache: most tests compile the same few steps (a ResNet-8 on 8 CPU
devices); XLA's executables, keyed by their HLO and options, are written
once and read back by every later test and every command a test starts
(the environment carries the setting to subprocesses). Same executables,
so the same results, bit for bit.
"""

import gc
import os
import pathlib
import sys
import tempfile

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


def pytest_collection_modifyitems(items):
  """Under mutmut (docs/testing.md, "Mutation testing"), a mutant's tests
  fastest first, by the times of mutmut's own clean run: with -x it dies
  at its cheapest failing test instead of after a slow one that passes."""
  if os.environ.get('MUTANT_UNDER_TEST', 'stats') in ('stats', 'fail', ''):
    return
  import json

  stats = REPO / 'mutmut-stats.json'  # REPO is mutants/ there
  if not stats.exists():
    return
  seconds = json.loads(stats.read_text())['duration_by_test']
  items.sort(key=lambda item: seconds.get(item.nodeid, 0.0))
