"""The errors a run reports on one line: bad input, a stop on purpose, a
failed write. How the commands print them: resnet_jax/command.py."""

import contextlib
import os
import re


class ConfigError(ValueError):
  """A config key, value, dataset or workdir the user must fix.

  Its message is one line that says what is wrong and what would be valid.
  """


class InUse(ConfigError):
  """A workdir that another run (or sweep command) holds: the refused one
  leaves no trace there, above all no failure over a run that trains."""


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
