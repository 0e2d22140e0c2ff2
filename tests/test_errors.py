"""The catalogue of bad inputs in docs/bad_inputs.md: one clear line, a
non-zero exit, the workdir as it was.

Most cases call the library as the command would (load the config, apply
the overrides, train or evaluate) and check the ConfigError; a handful
(CLI) go through the command line, for what only it does: flag parsing,
the one `error:` line with no traceback, the exit status.
"""

import hashlib
import os
import shutil

import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.errors import Stopped
from tests.helpers import REPO
from tests.helpers import SAMPLE
from tests.helpers import error_lines
from tests.helpers import load_config
from tests.helpers import run_cli
from tests.helpers import tiny_flags

TINY = tiny_flags(log_every=2, eval_every=4, checkpoint_every=2)
IMAGENET = [
  'train.py',
  '--config=configs/imagenet.py:resnet18',
  '--config.data.num_classes=40',
]
SAMPLE_FOLDER = '--config.data.image_folder=data/imagenet-sample'
DOC = (REPO / 'docs' / 'bad_inputs.md').read_text()


def _bin_dir(tmp, name, record_edit=None, size_cut=0, files=1):
  """A local_dir with `files` small data_batch files made from the sample."""
  folder = tmp / name
  folder.mkdir()
  records = np.fromfile(SAMPLE / 'data_batch_1.bin', np.uint8)
  records = bytearray(records[: 3073 * 40])
  if record_edit:
    record_edit(records)
  for i in range(files):
    (folder / f'data_batch_{i + 1}.bin').write_bytes(
      bytes(records[: len(records) - size_cut])
    )
  return folder


def _bad_label(records):
  records[3073 * 5] = 11  # record 5's label byte


def _damage_all(workdir):
  for step in os.listdir(workdir / 'checkpoints'):
    os.remove(workdir / 'checkpoints' / step / 'default' / '_METADATA')


# id: (command and flags, how to prepare, message fragment, exit status).
# In flags, {tmp} is the test's temporary folder and {workdir} the workdir.
CASES = {
  'unknown-model': (
    ['train.py', '--config=configs/cifar10.py:vgg16'],
    None,
    "unknown model 'vgg16'",
    2,
  ),
  'depth-not-6n+2': (
    ['train.py', '--config=configs/cifar10.py:resnet21'],
    None,
    'CIFAR depth 21 is not 6n+2',
    2,
  ),
  'imagenet-depth': (
    ['-m', 'resnet_jax.summary', '--config=configs/imagenet.py:resnet20'],
    None,
    'ImageNet depth 20 is not one of',
    2,
  ),
  'shortcut-value': (
    ['train.py', '--config=configs/cifar10.py:resnet20,shortcut=E'],
    None,
    "shortcut='E' is not one of A, B, C, D",
    2,
  ),
  'shortcut-on-plain': (
    ['train.py', *TINY, '--config.model.residual=False'],
    None,
    'on a plain net: plain nets have no shortcut',
    2,
  ),
  'stride-value': (
    [
      '-m',
      'resnet_jax.summary',
      '--config=configs/imagenet.py:resnet50,stride=v2',
    ],
    None,
    "stride='v2' is not one of v1, v1.5",
    2,
  ),
  'block-value': (
    ['train.py', *TINY, '--config.model.block=bottle'],
    None,
    "model.block='bottle' is not one of standard, preact",
    2,
  ),
  'unknown-key': (
    ['train.py', *TINY, '--config.train.batchsize=128'],
    None,
    "unknown config key 'batchsize' (did you mean",
    2,
  ),
  'wrong-type': (
    ['train.py', *TINY, '--config.train.batch_size=big'],
    None,
    "invalid literal for int() with base 10: 'big'",
    2,
  ),
  'config-file': (
    ['train.py', '--config=configs/nope.py'],
    None,
    'cannot load --config',
    2,
  ),
  'positional-arg': (
    ['train.py', *TINY, 'extra'],
    None,
    'unexpected arguments: extra',
    2,
  ),
  'schedule-value': (
    ['train.py', *TINY, '--config.optim.schedule=poly'],
    None,
    "optim.schedule='poly' is not one of",
    2,
  ),
  'out-of-range': (
    ['train.py', *TINY, '--config.optim.momentum=1.5'],
    None,
    'optim.momentum=1.5 is out of range: must be a number in [0, 1)',
    2,
  ),
  'local-dir-missing': (
    ['train.py', *TINY, '--config.data.local_dir={tmp}/nowhere'],
    None,
    'is not a directory',
    2,
  ),
  'local-dir-empty': (
    ['train.py', *TINY, '--config.data.local_dir={tmp}/e'],
    lambda tmp, wd: (tmp / 'e').mkdir(),
    'has no data_batch_*.bin files',
    2,
  ),
  'bin-size': (
    ['train.py', *TINY, '--config.data.local_dir={tmp}/cut'],
    lambda tmp, wd: _bin_dir(tmp, 'cut', size_cut=7),
    'not a positive multiple of the 3073-byte',
    2,
  ),
  'label-range': (
    ['train.py', *TINY, '--config.data.local_dir={tmp}/lab'],
    lambda tmp, wd: _bin_dir(tmp, 'lab', _bad_label),
    'record 5 has label 11, outside 0..9',
    2,
  ),
  'validation-size': (
    ['train.py', *TINY, '--config.data.validation_size=2000'],
    None,
    'validation_size=2000 must be in 0..1999',
    2,
  ),
  'eval-on-validation': (
    ['train.py', *TINY, '--config.data.validation_size=0'],
    None,
    'data.eval_on=validation needs',
    2,
  ),
  'tfds-offline': (
    [
      'train.py',
      *TINY,
      '--config.data.local_dir=',
      '--config.data.download=False',
      '--config.data.tfds_data_dir={tmp}/tfds',
    ],
    None,
    'is not prepared in',
    2,
  ),
  'batch-devices': (
    ['train.py', *TINY, '--config.train.batch_size=100'],
    None,
    'does not divide over 8 devices',
    2,
  ),
  'batch-size-data': (
    ['train.py', *TINY, '--config.train.batch_size=4096'],
    None,
    'is larger than the 1800 training images',
    2,
  ),
  'workdir-is-file': (
    ['train.py', *TINY, '--workdir={tmp}/file'],
    lambda tmp, wd: (tmp / 'file').write_text('x'),
    'exists and is not a directory',
    2,
  ),
  'workdir-unwritable': (
    ['train.py', *TINY, '--workdir={tmp}/file/run'],
    lambda tmp, wd: (tmp / 'file').write_text('x'),
    'cannot write to --workdir',
    2,
  ),
  'changed-experiment': (
    ['train.py', *TINY, '--config.model.shortcut=B'],
    'run',
    'cannot resume',
    2,
  ),
  'config-json-garbled': (['train.py', *TINY], 'garbled', 'is unreadable', 2),
  'checkpoints-unreadable': (
    ['train.py', *TINY],
    'damaged',
    'no readable checkpoint among 2',
    2,
  ),
  'evaluate-no-run': (
    ['-m', 'resnet_jax.evaluate'],
    None,
    'not found: --workdir must be',
    2,
  ),
  'evaluate-no-checkpoint': (
    ['-m', 'resnet_jax.evaluate'],
    'config-only',
    'no checkpoint in',
    2,
  ),
  'evaluate-no-test': (
    ['-m', 'resnet_jax.evaluate', '--config.data.eval_on=test'],
    'run',
    'has no test_batch.bin to evaluate on',
    2,
  ),
  'imagenet-folder-missing': (
    [*IMAGENET, '--config.data.image_folder={tmp}/none'],
    None,
    'not found: expected',
    2,
  ),
  'imagenet-empty-class': (
    [*IMAGENET, '--config.data.image_folder={tmp}/folder'],
    lambda tmp, wd: (tmp / 'folder' / 'train' / 'n0').mkdir(parents=True),
    'has no JPEG images',
    2,
  ),
  'imagenet-manual-missing': (
    [
      *IMAGENET,
      '--config.data.tfds_data_dir={tmp}/tfds',
      '--config.data.manual_dir={tmp}/manual',
    ],
    None,
    'is not prepared in',
    2,
  ),
  'imagenet-crop-too-large': (
    [*IMAGENET, SAMPLE_FOLDER, '--config.data.image_size=300'],
    None,
    'the crop would not fit',
    2,
  ),
  'imagenet-protocol': (
    [*IMAGENET, SAMPLE_FOLDER, '--config.data.eval_protocol=twelve_crop'],
    None,
    "data.eval_protocol='twelve_crop' is not one of",
    2,
  ),
  'diverged': (
    [
      'train.py',
      *TINY,
      '--config.optim.lr=1e35',
    ],
    None,
    'non-finite',
    3,
  ),
}


# Through the command line: flag parsing, and one case of each exit path.
CLI = (
  'unknown-key',
  'wrong-type',
  'config-file',
  'positional-arg',
  'out-of-range',
  'evaluate-no-run',
  'diverged',
)


def run_in_process(args) -> tuple[int, str]:
  """What the command given by `args` does, called as a library: (exit
  status, message) of the ConfigError or Stopped it ends with."""
  from resnet_jax.eval import saved_run
  from resnet_jax.model import resnet
  from resnet_jax.paper.reproduce import apply_overrides
  from resnet_jax.run import saved_config
  from resnet_jax.train import loop

  value = {a.split('=', 1)[0]: a.split('=', 1)[1] for a in args if '=' in a}
  overrides = [a.removeprefix('--config.') for a in args if '--config.' in a]
  workdir = value.get('--workdir')
  try:
    if 'resnet_jax.evaluate' in args:
      config = apply_overrides(saved_config.read(workdir), overrides)
      saved_run.evaluate_workdir(config, workdir)
    else:
      config = apply_overrides(load_config(value['--config']), overrides)
      if 'resnet_jax.summary' in args:
        resnet.build(config.model, config.data.num_classes)
      else:
        loop.train_and_evaluate(config, workdir)
  except ConfigError as e:
    return 2, str(e)
  except Stopped as e:
    return e.exit_code, str(e)
  return 0, ''


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A tiny finished run (checkpoints at 2 and 4) to resume or evaluate."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  code, _ = run_in_process(['train.py', *TINY, f'--workdir={workdir}'])
  assert code == 0
  return workdir


def _snapshot(folder):
  """Every file under `folder` with a hash of its bytes."""
  found = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, folder)] = hashlib.sha1(
          f.read()
        ).hexdigest()
  return found


@pytest.mark.parametrize('case', CASES)
def test_bad_input(case, tmp_path, finished_run):
  args, prepare, message, code = CASES[case]
  workdir = tmp_path / 'work'
  if prepare in ('run', 'garbled', 'damaged', 'config-only'):
    shutil.copytree(finished_run, workdir)
    if prepare == 'garbled':
      (workdir / 'config.json').write_text('{"model": ')
    elif prepare == 'damaged':
      _damage_all(workdir)
    elif prepare == 'config-only':
      shutil.rmtree(workdir / 'checkpoints')
  else:
    workdir.mkdir()
    (workdir / 'notes.txt').write_text('keep me')
    if prepare:
      prepare(tmp_path, workdir)
  args = [a.format(tmp=tmp_path, workdir=workdir) for a in args]
  takes_workdir = 'resnet_jax.summary' not in args
  if takes_workdir and not any(a.startswith('--workdir') for a in args):
    args.append(f'--workdir={workdir}')
  before = _snapshot(workdir)
  if case == 'diverged':
    before = None  # it trains, then stops: checked below instead
  if case in CLI:
    result = run_cli(*args)
    assert result.returncode == code, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
  else:
    status, text = run_in_process(args)
    assert status == code and message in text, text
    lines = [text]
  assert message in DOC, f'{case}: add its message to docs/bad_inputs.md'
  if before is not None:
    assert _snapshot(workdir) == before  # nothing in the workdir touched
  else:
    assert 'is kept' in lines[0] or 'no checkpoint had been saved' in lines[0]
    assert (workdir / 'notes.txt').read_text() == 'keep me'


def test_catalogue_has_at_least_20_entries():
  rows = [line for line in DOC.splitlines() if line.startswith('| ')]
  assert len(CASES) >= 20 and len(rows) - 1 >= len(CASES)
