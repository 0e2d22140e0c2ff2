"""TensorFlow only where tf.data is: a virtual environment holding the
test environment's packages but tensorflow and tensorflow-datasets (links
to each of the others, so nothing is downloaded), and in it the paths
that do not read through tf.data, as a GPU container without TensorFlow
runs them (tests/without_tensorflow.py)."""

import json
import os
import re
import subprocess
import sysconfig
import venv

import pytest

from tests.helpers import REPO
from tests.helpers import cli_env

TENSORFLOW = re.compile(r'^tensorflow', re.IGNORECASE)  # TF, tfds, their metadata


def _environment_without_tensorflow(root) -> str:
  """A venv of this interpreter whose site-packages links every entry of
  the test environment's but TensorFlow's; returns its python."""
  venv.create(root, symlinks=True, with_pip=False)
  python = os.path.join(root, 'bin', 'python')
  target = subprocess.run(
    [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  sources = {sysconfig.get_paths()[k] for k in ('purelib', 'platlib')}
  for source in sorted(sources):
    for entry in os.listdir(source):
      link = os.path.join(target, entry)
      if TENSORFLOW.match(entry) or os.path.lexists(link):
        continue
      os.symlink(os.path.join(source, entry), link)
  return python


@pytest.fixture(scope='module')
def python(tmp_path_factory):
  return _environment_without_tensorflow(tmp_path_factory.mktemp('venv'))


def run(python, *args):
  return subprocess.run(
    [python, *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env=cli_env(2),
  )


@pytest.fixture(scope='module')
def driven(python, tmp_path_factory):
  """What tests/without_tensorflow.py saw there, and its folder."""
  root = tmp_path_factory.mktemp('paths')
  result = run(python, '-m', 'tests.without_tensorflow', str(root))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1]), root


def test_every_path_off_tf_data_runs_without_tensorflow(driven):
  seen, _ = driven
  # The environment is real: neither package can be found there.
  assert not seen['tensorflow_findable'] and not seen['tfds_findable']
  assert seen['trained']['step'] == 2
  assert seen['trained']['num_examples'] == 200
  assert seen['evaluated']['top1_accuracy'] == seen['trained']['top1_accuracy']
  assert seen['png_as_the_array']  # Pillow reads the PNG as the arrays hold it
  assert len(seen['predicted']) == 1 and len(seen['predicted'][0]['top5']) == 5
  assert seen['benchmark']['step_images_per_sec'] > 0
  assert seen['summary_params'] == 269_722  # ResNet-20, option A (0.27M)
  assert seen['converted']['tensors'] == 122  # ResNet-18's state dict
  assert 'tf.data' in seen['tf_data_error']
  assert "pip install 'tensorflow-cpu" in seen['tf_data_error']
  assert seen['tensorflow_imported'] == []


def test_commands_without_tensorflow(python, driven):
  """The predict command on a PNG of a CIFAR run (its import ended in a
  traceback there), and a tf.data command's one line, exit 2, with
  nothing left in its workdir."""
  _, root = driven
  png = root / 'picture.png'
  result = run(
    python, '-m', 'resnet_jax.predict', f'--workdir={root / "cifar"}', png
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout)['file'] == str(png)

  workdir = root / 'folder-command'
  result = run(
    python,
    'train.py',
    '--config=configs/imagenet.py:resnet18',
    f'--config.data.image_folder={root / "images"}',
    '--config.data.num_classes=2',
    '--config.train.batch_size=2',
    f'--workdir={workdir}',
  )
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith('error: ') and 'tf.data' in lines[-1]
  assert sum(line.startswith('error:') for line in lines) == 1
  assert 'Traceback' not in result.stderr
