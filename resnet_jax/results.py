"""The README's results section, made from reproduce.py's output folders.

  python -m resnet_jax.results --readme=README.md docs/results/DIR [DIR ...]

Each DIR is a reproduce WORKDIR holding experiment.json, ledger.md and
the plots (curves.png, responses.png), and optionally NOTES.md: what the
run does and does not show, in a person's words. The section between the
README's two markers is replaced; the rest of the README is left as it
is. Run it again after any reproduction, so that the README quotes the
ledgers and nothing else.
"""

import json
import os

from absl import flags

from resnet_jax import errors
from resnet_jax.errors import ConfigError
from resnet_jax.run import layout

FLAGS = flags.FLAGS
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


def main(argv):
  folders = argv[1:]
  if not folders:
    raise ConfigError('name one or more reproduce workdirs')
  readme = FLAGS.readme
  with open(readme) as f:
    text = f.read()
  base = os.path.dirname(os.path.abspath(readme))
  updated = replace_section(text, section(folders, base))
  if updated != text:
    with open(readme, 'w') as f:
      f.write(updated)
  print(f'{readme}: results from {len(folders)} folder(s)')


if __name__ == '__main__':
  flags.DEFINE_string('readme', 'README.md', 'The README to update.')
  errors.run(main)
