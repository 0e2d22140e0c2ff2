"""A run's own files in its workdir, before the first step: the folder
created (or checked writable) before anything is built, then config.json,
classes.json and the training listing, once the run can really go on.
Written by the first process, each whole or not at all."""

import json
import os

import jax

from resnet_jax import errors
from resnet_jax.errors import ConfigError
from resnet_jax.run import files
from resnet_jax.run import layout


def prepare(workdir: str):
  """Creates WORKDIR, or checks that it may be written."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--workdir={workdir} exists and is not a directory')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(
      f'cannot write to --workdir={workdir}: {e.strerror or e}'
    ) from e


def write_start(workdir: str, config, classes, save_listing, shape=None):
  """config.json; classes.json (the class names, for resnet_jax.predict)
  where the data has names; the training files (`save_listing(workdir)`,
  the input's: a no-op where it lists none); devices.json, the `shape`
  this slice trains on (processes, local devices, devices)."""
  if jax.process_index() != 0:
    return
  if shape is not None:
    path = layout.path(workdir, layout.DEVICES)
    with errors.writing(path, 'writing the device count'):
      files.write_json(path, shape)
  path = layout.path(workdir, layout.CONFIG)
  with errors.writing(path, 'writing the config'):
    text = config.to_json_best_effort(indent=2, sort_keys=True) + '\n'
    files.replace(path, text)
  if classes:
    path = layout.path(workdir, layout.CLASSES)
    with errors.writing(path, 'writing the class names'):
      files.replace(path, json.dumps(list(classes)))
  path = layout.path(workdir, layout.TRAIN_FILES)
  with errors.writing(path, 'writing the list of training files'):
    save_listing(workdir)
