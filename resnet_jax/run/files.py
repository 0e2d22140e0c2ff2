"""Writing a run's small files whole or not at all."""

import json
import os


def replace(path: str, text: str):
  """Writes `text` to `path` whole or not at all: a full disk or a killed
  process never leaves a file cut short (a temporary file, then a rename)."""
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w', newline='') as f:  # the text's own line ends
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, value):
  replace(path, json.dumps(value, indent=1) + '\n')


def read_json(path: str):
  """The JSON value in `path`, or None where there is no such file."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
