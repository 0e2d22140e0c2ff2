"""The README's results section, made from reproduce.py's output folders.

  python -m resnet_jax.results --readme=README.md docs/results/DIR [DIR ...]

Each DIR is a reproduce WORKDIR holding experiment.json, ledger.md and
the plots (curves.png, responses.png), and optionally NOTES.md: what the
run does and does not show, in a person's words. The section between the
README's two markers is replaced; the rest of the README is left as it
is. Run it again after any reproduction, so that the README quotes the
ledgers and nothing else.
"""

import os

from absl import flags

from resnet_jax import command
from resnet_jax.errors import ConfigError
from resnet_jax.paper.results import replace_section
from resnet_jax.paper.results import section
from resnet_jax.run import files

FLAGS = flags.FLAGS


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
    files.replace(readme, updated)
  print(f'{readme}: results from {len(folders)} folder(s)')


def cli():
  """The command (its console script, and `python -m`)."""
  flags.DEFINE_string('readme', 'README.md', 'The README to update.')
  command.run(main)


if __name__ == '__main__':
  cli()
