"""Test environment: eight CPU devices for the multi-device tests (must be
set before JAX is imported) and no accelerator for TensorFlow."""

import os
import pathlib
import sys

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
