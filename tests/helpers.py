"""Small helpers shared by the tests."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

from resnet_jax.config.arguments import load as load_config  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / 'data' / 'cifar10-sample'


def commands() -> dict[str, str]:
  """The package's commands, as pyproject.toml installs them: 'train' (for
  resnet-jax-train) -> its module, 'resnet_jax.train.__main__'."""
  import tomllib

  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  return {
    name.removeprefix('resnet-jax-'): target.split(':')[0]
    for name, target in project['scripts'].items()
  }


def few_devices(n: int = 2):
  """The first `n` of the session's 8 CPU devices, for runs whose point is
  not the device count: on two cores a 2-device mesh compiles and runs a
  ResNet step faster than an 8-device one (8 shards of a tiny batch)."""
  import jax

  return jax.devices()[:n]


def xla_flags(devices: int) -> str:
  """The session's XLA_FLAGS (tests/conftest.py) with `devices` CPU
  devices instead of 8: a command compiles as the tests do."""
  flag = '--xla_force_host_platform_device_count'
  rest = re.sub(rf'{flag}=\d+', '', os.environ.get('XLA_FLAGS', '')).split()
  return ' '.join([*rest, f'{flag}={devices}'])


def cli_env(devices: int | None = None, **extra) -> dict:
  """The environment for a command: `devices` CPU devices, plus `extra`."""
  env = dict(os.environ, **extra)
  if devices is not None:
    env['XLA_FLAGS'] = xla_flags(devices)
  return env


def run_cli(
  *args: str, timeout: float = 300, devices: int | None = None, **env
) -> subprocess.CompletedProcess:
  """Runs `python ARGS...` in the repo root, capturing text output."""
  return subprocess.run(
    [sys.executable, *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=cli_env(devices, **env),
  )


def start_cli(
  *args: str, devices: int | None = None, **env
) -> subprocess.Popen:
  """Starts `python ARGS...` in the background."""
  return subprocess.Popen(
    [sys.executable, *args],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=cli_env(devices, **env),
  )


def from_parent(fixture: str) -> str | None:
  """A fixture's value made by the pytest process that started this one
  (tests/conftest.py: a test marked `xla_default_emitters`), or None."""
  return json.loads(os.environ.get('RESNET_JAX_TESTS_FROM_PARENT', '{}')).get(
    fixture
  )


def read_metrics(workdir, kind: str = 'train') -> list[dict]:
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:  # a line being written
      continue
  return [r for r in records if r['kind'] == kind]


def wait_for_step(process, workdir, step: int, timeout: float = 120):
  """Blocks until `workdir`'s metrics log reaches `step`."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(r['step'] >= step for r in read_metrics(workdir)):
      return
    if process.poll() is not None:
      raise AssertionError(f'exited early: {process.communicate()[1][-2000:]}')
    time.sleep(0.02)
  raise AssertionError(f'step {step} not reached in {timeout}s')


def wait_for(condition, what: str, timeout: float = 180):
  """Polls `condition()` until it is true; fails naming `what`."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return
    time.sleep(0.2)
  raise AssertionError(f'timed out waiting for {what}')


def error_lines(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def prepare_tfds(data_dir, name: str, images, labels, names) -> None:
  """Prepares tfds dataset `name` in `data_dir` from uint8 images and
  labels, as PNG records of one 'train' split, through tfds' own writer
  (as it prepares any download). tfds.builder(name, data_dir=...) then
  finds it there."""
  from etils import epath
  import tensorflow_datasets as tfds

  shape = images.shape[1:]

  class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('1.0.0')
    pkg_dir_path = epath.Path(data_dir)  # no package of metadata files

    def _info(self):
      return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
          {
            'image': tfds.features.Image(shape=shape, encoding_format='png'),
            'label': tfds.features.ClassLabel(names=list(names)),
          }
        )
      )

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {'image': image, 'label': int(label)}

  Builder.name = name
  Builder(data_dir=str(data_dir)).download_and_prepare()


def input_sample_config(folder):
  """The ImageNet config on an image folder at 32x32, with the training
  mean from a sample of 25 images: for checks of the input alone."""
  config = load_config('configs/imagenet.py:resnet18')
  config.data.update(
    image_folder=str(folder),
    num_classes=40,
    image_size=32,
    scale_range=(37, 69),
    mean_images=25,
  )
  config.train.batch_size = 8
  return config


# The tiny run most tests train: the quickstart's data (1,800 bundled CIFAR
# images, 200 held out) with a ResNet-8, batch 16, a few steps.
TINY_TRAIN = dict(
  length=4, batch_size=16, log_every=1, eval_every=1000, checkpoint_every=1000
)


def tiny_config(**train):
  """The tiny run's config; `train` overrides train.* keys."""
  config = load_config('configs/quickstart.py:resnet8')
  config.train.update(dict(TINY_TRAIN, **train))
  return config


def tiny_flags(**train) -> list[str]:
  """The same run as command-line flags of train.py."""
  return ['--config=configs/quickstart.py:resnet8'] + [
    f'--config.train.{k}={v}' for k, v in dict(TINY_TRAIN, **train).items()
  ]
