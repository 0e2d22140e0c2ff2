"""Records where each Python process of a test run spends its compile
time: imported at start-up by every process whose PYTHONPATH has this
folder (benchmarks/suite_time/run.sh sets it), it waits for JAX to be
imported, then appends JAX's compile and compilation-cache events, and at
exit the process's CPU time, to $SUITE_TIME_DIR/<pid>.jsonl. The pytest
plugin beside it (tests_seen.py) names the test that is running in
$SUITE_TIME_TEST, which the processes a test starts inherit."""

import atexit
import importlib.machinery
import json
import os
import resource
import sys
import time

_OUT = os.environ.get('SUITE_TIME_DIR')
_START = time.time()
_WANTED = ('/jax/core/compile/', '/jax/compilation_cache/')


def _write(record):
  record['test'] = os.environ.get('SUITE_TIME_TEST', '')
  record['argv'] = ' '.join(sys.argv)[:300]
  with open(os.path.join(_OUT, f'{os.getpid()}.jsonl'), 'a') as f:
    f.write(json.dumps(record) + '\n')


def _listen():
  import jax.monitoring

  def duration(event, secs, **kwargs):
    if event.startswith(_WANTED):
      _write({'event': event, 'secs': secs, 'fun': kwargs.get('fun_name', '')})

  def count(event, **kwargs):
    if event.startswith(_WANTED):
      _write({'event': event})

  jax.monitoring.register_event_duration_secs_listener(duration)
  jax.monitoring.register_event_listener(count)


class _AfterJax:
  """A finder that lets the normal one load `jax`, then listens."""

  def find_spec(self, name, path=None, target=None):
    if name != 'jax':
      return None
    sys.meta_path.remove(self)
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None:
      return None
    load = spec.loader.exec_module

    def exec_module(module):
      load(module)
      _listen()

    spec.loader.exec_module = exec_module
    return spec


def _at_exit():
  if 'jax' in sys.modules:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    _write({'event': 'exit', 'cpu': cpu, 'wall': time.time() - _START})


if _OUT and os.path.isdir(_OUT):
  sys.meta_path.insert(0, _AfterJax())
  atexit.register(_at_exit)
