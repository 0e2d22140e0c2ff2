"""What a launcher prints while runs go: a line a change, and on a
terminal a bar of the runs ended (tqdm) that the lines scroll above."""

import sys


def bar(total: int):
  """A bar of `total` runs on stderr where it is a terminal, else None."""
  if not sys.stderr.isatty():
    return None
  import tqdm

  return tqdm.tqdm(total=total, unit='run', desc='runs ended', file=sys.stderr)


def say(shown, line: str):
  """One line on stderr, above the bar `shown` where there is one."""
  if shown is not None:
    shown.write(line, file=sys.stderr)
  else:
    print(line, file=sys.stderr, flush=True)


def ended(shown):
  if shown is not None:
    shown.update(1)
