"""Summarises a benchmarks/suite_time/run.sh record as one JSON object:
the run's time, each pytest worker's busy time, and the CPU of the
workers and of the processes the tests start, split into XLA compiling
(programs read from the compilation cache, compiled anew, or too small to
cache), tracing and lowering; then the slowest tests, each test file's
CPU, and the tests whose new programs cost the most to compile.

  python benchmarks/suite_time/report.py OUTDIR [--top N]
"""

import argparse
import collections
import glob
import json
import os
import re

COMPILE = '/jax/core/compile/backend_compile_duration'
TRACE = '/jax/core/compile/jaxpr_trace_duration'
LOWER = '/jax/core/compile/jaxpr_to_mlir_module_duration'
HIT = '/jax/compilation_cache/cache_hits'
MISS = '/jax/compilation_cache/cache_misses'


def _process(rows, missed_by_test):
  """One process's totals; adds the compile time of its new programs to
  `missed_by_test`. A compile is a cache miss (or hit) when that event
  came just before it; neither: under the cache's size or time floor, so
  never written."""
  out = collections.Counter()
  pending = 'uncached'
  for row in rows:
    event = row['event']
    if event == MISS:
      pending = 'missed'
    elif event == HIT:
      pending = 'read'
    elif event == COMPILE:
      out[f'compile_{pending}_s'] += row['secs']
      out[f'compiles_{pending}'] += 1
      if pending == 'missed':
        missed_by_test[row['test'] or '(between tests)'] += row['secs']
      pending = 'uncached'
    elif event == TRACE:
      out['trace_s'] += row['secs']
    elif event == LOWER:
      out['lower_s'] += row['secs']
    elif event == 'exit':
      out['cpu_s'] += row['cpu']
  return out


def _is_worker(rows):
  # pytest-xdist's workers run as `python -c ...`; the main process is
  # pytest itself (`python -m pytest`: pytest/__main__.py).
  program = (rows[0]['argv'].split() or [''])[0]
  return program == '-c' or re.search(r'pytest(/__main__\.py)?$', program)


def report(out_dir, top=15):
  with open(os.path.join(out_dir, 'time.json')) as f:
    result = json.load(f)
  tests = []
  for path in glob.glob(os.path.join(out_dir, 'tests_*.jsonl')):
    worker = os.path.basename(path)[len('tests_') : -len('.jsonl')]
    with open(path) as f:
      tests += [dict(json.loads(line), worker=worker) for line in f]
  busy = collections.Counter()
  for t in tests:
    busy[t['worker']] += t['wall']
  result['tests'] = len(tests)
  result['worker_busy_s'] = {w: round(s, 1) for w, s in sorted(busy.items())}

  groups = {'workers': collections.Counter(), 'started': collections.Counter()}
  missed_by_test = collections.Counter()
  for path in glob.glob(os.path.join(out_dir, '[0-9]*.jsonl')):
    with open(path) as f:
      rows = [json.loads(line) for line in f]
    if not rows:
      continue
    group = groups['workers' if _is_worker(rows) else 'started']
    group['processes'] += 1
    group.update(_process(rows, missed_by_test))
  result.update(
    {
      k: {n: round(v, 1) for n, v in sorted(g.items())}
      for k, g in groups.items()
    }
  )
  tests.sort(key=lambda t: -t['wall'])
  result['slowest'] = [
    {
      'test': t['test'],
      'wall_s': round(t['wall'], 1),
      'cpu_s': round(t['cpu'], 1),
      'children_cpu_s': round(t['children_cpu'], 1),
    }
    for t in tests[:top]
  ]
  by_file = collections.Counter()
  for t in tests:
    by_file[t['test'].split('::')[0]] += t['cpu'] + t['children_cpu']
  result['cpu_s_by_file'] = {  # the workers' and the started processes'
    path: round(s, 1) for path, s in by_file.most_common()
  }
  result['new_programs_compile_s'] = {
    test: round(s, 1) for test, s in missed_by_test.most_common(top)
  }
  return result


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('out_dir', help="run.sh's OUTDIR")
  parser.add_argument('--top', type=int, default=15, help='tests listed')
  args = parser.parse_args()
  print(json.dumps(report(args.out_dir, args.top), indent=1))
