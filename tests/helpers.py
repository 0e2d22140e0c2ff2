"""Small helpers shared by the tests."""

import importlib.util
import pathlib
import subprocess
import sys

from ml_collections import config_dict

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(path_and_arg: str) -> config_dict.ConfigDict:
  """Loads 'configs/cifar10.py:resnet20' as --config does (without locking)."""
  path, _, arg = path_and_arg.partition(':')
  spec = importlib.util.spec_from_file_location('config_file', REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
  """Runs `python ARGS...` in the repo root, capturing text output."""
  return subprocess.run(
    [sys.executable, *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
