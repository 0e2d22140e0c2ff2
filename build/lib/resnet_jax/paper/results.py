"""The README's results section, written from reproduce folders."""

import json
import os

from resnet_jax.errors import ConfigError
from resnet_jax.run import layout

BEGIN = '<!-- results: made by python -m resnet_jax.results; do not edit -->'
END = '<!-- end of results -->'
PLOTS = ('curves.png', 'responses.png')


def section(folders, base: str) -> str:
  """The markdown for `folders` (links relative to the directory `base`)."""
  parts = [BEGIN]
  for folder in folders:
    meta_path = layout.path(folder, layout.EXPERIMENT)
    ledger_path = os.path.join(folder, 'ledger.md')
    for path in (meta_path, ledger_path):
      if not os.path.isfile(path):
        raise ConfigError(
          f'{path} not found: {folder} is not a reproduce workdir'
        )
    with open(meta_path) as f:
      meta = json.load(f)
    with open(ledger_path) as f:
      ledger = f.read().strip()
    link = os.path.relpath(folder, base)
    parts += [
      '',
      f'### {meta["experiment"]}: {meta["description"]}',
      '',
      f'Made by `{meta["command"]}` (folder `{link}`).',
      '',
      ledger,
    ]
    for plot in PLOTS:
      if os.path.isfile(os.path.join(folder, plot)):
        parts += ['', f'![{plot[:-4]}]({link}/{plot})']
    notes = os.path.join(folder, 'NOTES.md')
    if os.path.isfile(notes):
      with open(notes) as f:
        parts += ['', f.read().strip()]
  parts += ['', END]
  return '\n'.join(parts) + '\n'


def replace_section(text: str, new: str) -> str:
  """`text` with the lines from BEGIN to END (both included) replaced."""
  if (
    text.count(BEGIN) != 1
    or text.count(END) != 1
    or text.index(BEGIN) > text.index(END)
  ):
    raise ConfigError(
      f'the README needs the markers {BEGIN!r} and {END!r} once each, in '
      'that order, on lines of their own'
    )
  head, rest = text.split(BEGIN)
  old, tail = rest.split(END)
  del old
  return head + new + tail.removeprefix('\n')
