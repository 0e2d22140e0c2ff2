"""How a command-line tool runs: flags parsed (a built-in config by its
name), and a bad flag, config file, override or ConfigError ended with
one line on stderr and exit status 2; a Stopped run with its own line
and code."""

import functools
import logging as py_logging
import os
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

from resnet_jax.config import arguments
from resnet_jax.errors import ConfigError
from resnet_jax.errors import Stopped


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


def _config_files(argv):
  """--config=NAME[:ARG] with NAME a built-in config (quickstart,
  cifar10, ...) -> the path of its file, so that commands run from any
  folder; paths stay as they are."""
  out = []
  for i, arg in enumerate(argv):
    if arg.startswith('--config=') or (i and argv[i - 1] == '--config'):
      prefix = '--config=' if arg.startswith('--config=') else ''
      path, sep, rest = arg.removeprefix(prefix).partition(':')
      arg = prefix + arguments.config_file(path) + sep + rest
    out.append(arg)
  return out


HELP = ('--help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def _parse_flags(argv):
  argv = _config_files(argv)
  if any(arg in HELP for arg in argv[1:]):
    try:
      flags.FLAGS(argv)
    except SystemExit:  # absl ends a help request with status 1
      sys.exit(0)
  try:
    argv = flags.FLAGS(argv)
    if 'config' in flags.FLAGS and flags.FLAGS.config is not None:
      flags.FLAGS.config.keys()  # config_flags defers a load failure
    return argv
  except OSError as e:  # a config file that is missing or fails to import
    _fail(f'cannot load --config: {str(e).splitlines()[-1].strip()}')
  except (flags.Error, KeyError, AttributeError, TypeError) as e:
    _fail(_one_line(e))


class _OrbaxErrorsReraised(py_logging.Filter):
  """Drops the ERROR records of a failed Orbax save (tracebacks from its
  background threads, and asyncio's about its unretrieved tasks): the
  same failure reaches the run as an exception, which it reports on one
  line (WriteFailed)."""

  def filter(self, record):
    if record.levelno < py_logging.ERROR:
      return True
    orbax = f'{os.sep}orbax{os.sep}'
    if orbax in record.pathname:
      return False
    if record.name != 'asyncio':
      return True
    text = record.getMessage()
    if record.exc_info:
      text += ''.join(traceback.format_exception(*record.exc_info))
    return 'orbax' not in text  # its tasks, or its checkpoint-tmp paths


def _ignore_closed_event_loops(previous):
  """sys.unraisablehook without the tracebacks TensorStore reports when
  its writes complete after a failed Orbax save has closed the event loop
  they report to; the failure itself is reported as WriteFailed."""

  def hook(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return
    previous(unraisable)

  return hook


def run(main):
  """`app.run(main)` where a bad flag, config file, override or ConfigError
  ends the program with one line on stderr and exit status 2."""

  @functools.wraps(main)
  def checked_main(argv):
    if not flags.FLAGS['verbosity'].present:  # Orbax logs much at INFO
      logging.set_verbosity(logging.WARNING)
      logging.get_absl_handler().addFilter(_OrbaxErrorsReraised())
      sys.unraisablehook = _ignore_closed_event_loops(sys.unraisablehook)
    try:
      return main(argv)
    except ConfigError as e:
      _fail(str(e))
    except Stopped as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)

  app.run(checked_main, flags_parser=_parse_flags)
