"""One error type for bad input, and the way command-line tools report it."""

import functools
import re
import sys

from absl import app
from absl import flags
from absl import logging


class ConfigError(ValueError):
  """A config key, value, dataset or workdir the user must fix.

  Its message is one line that says what is wrong and what would be valid.
  """


class Stopped(Exception):
  """A run that stopped on purpose (preemption, divergence): its message is
  printed on one line and the program exits with `exit_code`."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _one_line(error: Exception) -> str:
  """The useful line of a flag-parsing error. config_flags wraps errors of a
  config file's get_config, and of overrides, in tracebacks as text."""
  text = str(error)
  found = re.findall(r'ConfigError: (.*)', text)
  if found:
    return found[-1]
  if isinstance(error, (KeyError, AttributeError)):
    key = re.findall(r'\w+', text)[0]
    hint = re.search(r'Did you mean "(\w+)"', text)
    return f'unknown config key {key!r}' + (
      f' (did you mean {hint.group(1)!r}?)' if hint else ''
    )
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return ' '.join(lines[-2:]) if len(lines) > 1 else text


def _parse_flags(argv):
  try:
    argv = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
      flags.FLAGS.config.keys()  # config_flags defers a load failure
    return argv
  except OSError as e:  # a config file that is missing or fails to import
    _fail(f'cannot load --config: {str(e).splitlines()[-1].strip()}')
  except (flags.Error, KeyError, AttributeError, TypeError) as e:
    _fail(_one_line(e))


def run(main):
  """`app.run(main)` where a bad flag, config file, override or ConfigError
  ends the program with one line on stderr and exit status 2."""

  @functools.wraps(main)
  def checked_main(argv):
    if not flags.FLAGS['verbosity'].present:  # Orbax logs much at INFO
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except ConfigError as e:
      _fail(str(e))
    except Stopped as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)

  app.run(checked_main, flags_parser=_parse_flags)
