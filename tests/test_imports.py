"""The package's imports run one way (docs/architecture.md, "Floors"):
each folder imports only from the floors below it, with one named
exception, and no module imports itself round a circle. Read from the
source (every import statement, those inside functions too)."""

import ast
import json
import pathlib
import subprocess
import sys

from tests.helpers import REPO
from tests.helpers import commands

PACKAGE = REPO / 'resnet_jax'

# Bottom to top; a room is a folder of resnet_jax/ or a top-level module.
FLOORS = (
  ('errors',),
  ('parallel', 'processes'),
  ('model',),
  ('config',),
  ('run', 'command'),
  ('data',),
  ('train',),
  ('eval',),
  ('launch',),
  ('paper',),
  # The package's API (__init__.py) and the commands.
  ('__init__', 'benchmark', 'convert', 'evaluate', 'predict', 'reproduce',
   'responses', 'results', 'summary'),
)
# The one arrow up: the training loop evaluates as it trains.
EXCEPTION = ('resnet_jax.train.loop', 'resnet_jax.eval.evaluator')


def _modules() -> dict[str, pathlib.Path]:
  modules = {}
  for path in PACKAGE.rglob('*.py'):
    parts = path.relative_to(REPO).with_suffix('').parts
    if parts[-1] == '__init__':
      parts = parts[:-1]
    modules['.'.join(parts)] = path
  return modules


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """The package's modules that module `name` imports."""
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split('.')[: len(package.split('.')) - node.level + 1]
        origin = '.'.join(base + ([node.module] if node.module else []))
      else:
        origin = node.module
      names = [f'{origin}.{a.name}' for a in node.names]
      submodules = [n for n in names if n in modules]
      found.update(submodules)
      if len(submodules) < len(names):  # names defined in `origin`
        found.add(origin)
  return {m for m in found if m in modules and m != name}


def _graph():
  modules = _modules()
  return {m: _imports(m, p, modules) for m, p in modules.items()}


def _room(module: str) -> str:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else '__init__'


def _floor(module: str) -> int:
  room = _room(module)
  for level, rooms in enumerate(FLOORS):
    if room in rooms:
      return level
  raise AssertionError(f'{module}: its room {room} is on no floor of FLOORS')


def test_every_import_runs_down_but_the_loops_evaluator():
  upward = sorted(
    (a, b)
    for a, targets in _graph().items()
    for b in targets
    if _room(a) != _room(b) and _floor(b) >= _floor(a)
  )
  assert upward == [EXCEPTION]


def test_no_module_imports_itself_round_a_circle():
  graph = _graph()
  done, on_path = set(), []

  def visit(module):
    if module in on_path:
      circle = on_path[on_path.index(module) :] + [module]
      raise AssertionError('a circle: ' + ' -> '.join(circle))
    if module in done:
      return
    on_path.append(module)
    for target in sorted(graph[module]):
      visit(target)
    on_path.pop()
    done.add(module)

  for module in sorted(graph):
    visit(module)


def test_the_check_sees_an_import_inside_a_function(tmp_path):
  """A lazy import counts: an arrow up hidden in a function is one."""
  modules = {'resnet_jax.model.x': None, 'resnet_jax.paper.y': None}
  source = tmp_path / 'x.py'
  source.write_text('def f():\n  from resnet_jax.paper import y\n')
  found = _imports('resnet_jax.model.x', source, modules)
  assert found == {'resnet_jax.paper.y'}
  assert _floor('resnet_jax.paper.y') > _floor('resnet_jax.model.x')


# A command asked for its --help, or given a bad model argument, answers
# before it imports JAX (docs/architecture.md): what it prints, and the
# heavy packages it had imported by its exit.
ANSWER_WITHOUT_JAX = """
import json, runpy, sys
sys.argv = sys.argv[1:]
try:
  runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
except SystemExit as e:
  heavy = [m for m in ('jax', 'flax', 'tensorflow') if m in sys.modules]
  print(json.dumps(dict(code=e.code, heavy=heavy)), file=sys.stderr)
"""
# reproduce plans before it answers: its plan counts each network's
# parameters, with JAX.
HEAVY_COMMANDS = ('reproduce',)


def test_help_and_a_refused_model_import_no_jax(tmp_path):
  assert set(HEAVY_COMMANDS) < set(commands())  # real ones, not all
  asked = [
    (module, '--help')
    for name, module in commands().items()
    if name not in HEAVY_COMMANDS
  ]
  asked.append(
    (
      commands()['train'],
      '--config=configs/cifar10.py:vgg16',
      f'--workdir={tmp_path}',
    )
  )
  processes = [
    subprocess.Popen(
      [sys.executable, '-c', ANSWER_WITHOUT_JAX, *args],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for args in asked
  ]
  for args, process in zip(asked, processes):
    out, err = process.communicate(timeout=120)
    answer = json.loads(err.splitlines()[-1])
    if args[1] == '--help':
      assert answer['code'] == 0 and '--' in out, (args, out, err[-2000:])
    else:
      assert answer['code'] == 2 and "unknown model 'vgg16'" in err, err
    assert answer['heavy'] == [], (args, answer)
