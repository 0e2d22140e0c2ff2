"""The package as users install it: a wheel built from the checkout,
installed into a fresh virtual environment outside the repository (its
dependencies reused from the test environment, not downloaded again),
then the public API, every command's --help and a few steps of the
quickstart, from a temporary folder."""

import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import warnings

import pytest

from tests.helpers import REPO
from tests.helpers import commands
from tests.helpers import xla_flags

COMMANDS = tuple(commands())


def readme_example() -> str:
  """The Python example of the README's API section, as written there."""
  text = (REPO / 'README.md').read_text()
  section = text[text.index('## Use it from your own code') :]
  return re.search(r'```python\n(.*?)```', section, re.S).group(1)


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
  root = tmp_path_factory.mktemp('package')
  wheels = root / 'wheels'
  subprocess.run(
    [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation']
    + ['--quiet', '-w', str(wheels), str(REPO)],
    check=True,
    capture_output=True,
  )
  (wheel,) = wheels.glob('resnet_jax-*.whl')
  env = root / 'venv'
  subprocess.run(
    [sys.executable, '-m', 'venv', '--without-pip', str(env)], check=True
  )
  python = env / 'bin' / 'python'
  site = subprocess.run(
    [python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  # The dependencies: the test environment's, after the venv's own.
  (pathlib.Path(site) / 'test_env.pth').write_text(
    sysconfig.get_path('purelib') + '\n'
  )
  subprocess.run(
    [sys.executable, '-m', 'pip', '--python', str(python), 'install']
    + ['--quiet', '--no-deps', '--no-index', str(wheel)],
    check=True,
    capture_output=True,
  )
  return env, root


def run_in(folder, *args, timeout=300):
  env = dict(os.environ, XLA_FLAGS=xla_flags(2))
  env.pop('PYTHONPATH', None)
  return subprocess.run(
    args, cwd=folder, capture_output=True, text=True, env=env, timeout=timeout
  )


def test_every_command_is_on_the_path_and_answers_help(venv):
  env, root = venv
  processes = [
    subprocess.Popen(
      [env / 'bin' / f'resnet-jax-{c}', '--help'],
      cwd=root,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=dict(os.environ, PYTHONPATH=''),
    )
    for c in COMMANDS
  ]
  for command, process in zip(COMMANDS, processes):
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, (command, out[-2000:])
    assert '--' in out and 'Traceback' not in out, (command, out[-2000:])


def test_api_and_quickstart_from_an_installed_copy(venv):
  env, root = venv
  work = root / 'work'
  work.mkdir()
  where = run_in(
    work,
    env / 'bin' / 'python',
    '-c',
    'import resnet_jax; print(resnet_jax.__file__)',
  )
  assert where.stdout.startswith(str(env)), where.stdout + where.stderr
  # The README's example, run as written, in a folder of its own.
  (work / 'example.py').write_text(readme_example())
  example = run_in(work, env / 'bin' / 'python', 'example.py')
  assert example.returncode == 0, example.stderr[-3000:]
  assert '(5, 10)' in example.stdout
  # The quickstart by its built-in name, data from the installed copy.
  quick = run_in(
    work,
    env / 'bin' / 'resnet-jax-train',
    '--config=quickstart:resnet8',
    '--config.train.length=4',
    '--config.train.batch_size=16',
    '--workdir=qs',
  )
  assert quick.returncode == 0, quick.stderr[-3000:]
  assert '"step": 4' in quick.stdout.splitlines()[-1]
  assert (
    'site-packages/resnet_jax/samples'
    in (work / 'qs' / 'config.json').read_text()
  )


def _warn_from(module: str, category):
  """warnings.warn(..., category) from a function of module `module` (a
  warning's module is that of the frame it is attributed to)."""
  namespace = {'__name__': module, 'warnings': warnings}
  exec('def call(c):\n  warnings.warn("going away", c)', namespace)
  namespace['call'](category)


@pytest.mark.parametrize(
  'category', [DeprecationWarning, PendingDeprecationWarning, FutureWarning]
)
def test_a_deprecation_about_our_own_call_fails_the_run(category):
  """pyproject.toml's filters: raised about a call in resnet_jax or the
  tests it is an error; about a library's own call, a warning."""
  for ours in ('resnet_jax.train.loop', 'tests.helpers', 'test_resume'):
    with pytest.raises(category, match='going away'):
      _warn_from(ours, category)
  with pytest.warns(category, match='going away'):
    _warn_from('optax._src.transform', category)
