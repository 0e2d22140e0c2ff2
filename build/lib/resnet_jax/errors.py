"""One error type for bad input, and the way command-line tools report it."""

import contextlib
import functools
import logging as py_logging
import os
import re
import sys
import traceback

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


class WriteFailed(Stopped):
  """A file of the run could not be written (a full disk, a lost mount,
  a permission taken away): the run stops with one line naming the path,
  and its checkpoints already saved stay as they were."""

  EXIT_CODE = 74  # sysexits' EX_IOERR

  def __init__(self, path: str, what: str, cause: BaseException):
    reason = _os_reason(cause)
    if reason is None:
      lines = str(cause).strip().splitlines() or [type(cause).__name__]
      reason = lines[0][:200]
    super().__init__(
      f'error: {what}: could not write {path} ({reason}); the checkpoints '
      'saved before are intact: free space (or fix the mount) and run the '
      'same command to resume',
      self.EXIT_CODE,
    )


def _os_reason(error: BaseException) -> str | None:
  """The operating system's words for a failed write, if it gave any:
  an OSError in the exception's chain, or the errno that TensorStore (the
  checkpoints' writer) quotes as os_error_code='28'."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.strerror:
      return error.strerror
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code:
      return os.strerror(int(code.group(1)))
    error = error.__cause__ or error.__context__
  return None


@contextlib.contextmanager
def writing(path: str, what: str):
  """A block whose OSError (ENOSPC, EIO, EACCES...) ends the run as
  WriteFailed(path, what)."""
  try:
    yield
  except OSError as e:
    raise WriteFailed(path, what, e) from e


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
  from resnet_jax.config import arguments

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
