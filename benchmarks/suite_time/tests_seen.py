"""pytest plugin (-p tests_seen): each test's wall time, its worker's CPU
time and its child processes' CPU time, one JSON line a test in
$SUITE_TIME_DIR/tests_<worker>.jsonl; and the running test's id in
$SUITE_TIME_TEST for the processes it starts (sitecustomize.py)."""

import json
import os
import resource
import time

import pytest


def _cpu(who):
  usage = resource.getrusage(who)
  return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  os.environ['SUITE_TIME_TEST'] = item.nodeid
  start = time.time()
  own, children = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
  yield
  row = {
    'test': item.nodeid,
    'start': start,
    'wall': time.time() - start,
    'cpu': _cpu(resource.RUSAGE_SELF) - own,
    'children_cpu': _cpu(resource.RUSAGE_CHILDREN) - children,
  }
  worker = os.environ.get('PYTEST_XDIST_WORKER', 'main')
  path = os.path.join(os.environ['SUITE_TIME_DIR'], f'tests_{worker}.jsonl')
  with open(path, 'a') as f:
    f.write(json.dumps(row) + '\n')
  os.environ['SUITE_TIME_TEST'] = ''
