"""One run per workdir: a training run holds WORKDIR/lock while it trains.

The hold is an exclusive flock on that file, which the kernel drops when
the holding process ends, however it ends (SIGKILL included): a dead run
never blocks the next one, and nothing needs cleaning up. The file's text
says who holds it (host, process id, since when) for the refusal of a
second run. On a network file system the lock is the server's (NFSv4, or
NFSv3 with lockd): a holder on a lost node is released when its lease
expires (typically 90 s). Where the file system has no locks at all, the
run warns and goes on unguarded.

Only process 0 of a multi-host job takes the lock; it tells the others
whether it got it, so that a second job stops on every host.
"""

import contextlib
import datetime
import fcntl
import json
import os
import socket

from absl import logging
import jax
import numpy as np

from resnet_jax.errors import ConfigError
from resnet_jax.errors import InUse
from resnet_jax.run import layout

NAME = layout.LOCK


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      who = json.loads(f.read() or '{}')
  except (OSError, ValueError):
    who = {}
  if not who:
    return 'holder unknown'
  return f'host {who["host"]}, process {who["pid"]}, since {who["since"]}'


def _take(workdir: str, name: str = NAME, holder: str = 'another run'):
  """The open, locked lock file, or InUse naming its holder."""
  path = os.path.join(workdir, name)
  f = open(path, 'a+')  # never truncated before it is ours
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise InUse(
      f'{workdir} is in use by {holder} ({_holder(path)}): wait for it '
      'to end, or use another --workdir'
    ) from None
  except OSError as e:  # ENOLCK, EOPNOTSUPP: a file system without locks
    logging.warning(
      'cannot lock %s (%s): a second run on this workdir would not be refused',
      path,
      e.strerror,
    )
    return f
  since = datetime.datetime.now(datetime.timezone.utc)
  f.seek(0)
  f.truncate()
  f.write(
    json.dumps(
      dict(
        host=socket.gethostname(),
        pid=os.getpid(),
        since=since.isoformat(timespec='seconds'),
      )
    )
    + '\n'
  )
  f.flush()
  return f


def _agree(refusal: str) -> str:
  """Process 0's refusal ('' if it holds the lock), on every process."""
  from jax.experimental import multihost_utils

  data = np.zeros(1024, np.uint8)
  text = refusal.encode()[: len(data)]
  data[: len(text)] = np.frombuffer(text, np.uint8)
  data = np.asarray(multihost_utils.broadcast_one_to_all(data))
  return bytes(data[data > 0]).decode(errors='replace')


@contextlib.contextmanager
def hold(workdir: str):
  """Holds WORKDIR for the block; InUse (a ConfigError) if another run
  does."""
  held, refusal = None, ''
  if jax.process_index() == 0:
    try:
      held = _take(workdir)
    except ConfigError as e:
      refusal = str(e)
  if jax.process_count() > 1:
    refusal = _agree(refusal)
  if refusal:
    raise InUse(refusal)
  try:
    yield
  finally:
    if held is not None:
      _release(held)


def _release(held):
  """Empties the holder's line and drops the lock (closing drops it)."""
  with contextlib.suppress(OSError):  # a full disk must not mask an error
    held.seek(0)
    held.truncate()
  held.close()


def held_elsewhere(workdir: str) -> bool:
  """Whether another process holds WORKDIR now (a run training there):
  what fails beside it must write nothing there. Asks on this process
  only, testing the lock for an instant; writes nothing."""
  try:
    f = open(os.path.join(workdir, NAME))
  except OSError:  # no lock file: never held
    return False
  with f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    except OSError:  # a file system without locks: no one holds it
      return False
    fcntl.flock(f, fcntl.LOCK_UN)
  return False


@contextlib.contextmanager
def hold_sweep(root: str):
  """Holds an experiment's folder for one `reproduce` command (ROOT/
  reproduce.lock) while it submits, trains or waits: a second command on
  it is refused, naming the holder. One process, no agreement needed."""
  os.makedirs(root, exist_ok=True)
  held = _take(root, layout.SWEEP_LOCK, 'another reproduce command')
  try:
    yield
  finally:
    _release(held)
