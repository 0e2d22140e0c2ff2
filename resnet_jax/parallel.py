"""The 1-D device mesh and moving data onto it.

Every compiled step is jax.jit of a jax.shard_map over the mesh axis
'data', with per-device semantics as pmap had; shard_map is strict, so
inputs are put on the mesh first: replicated (the state, CIFAR's arrays)
or split by rows (batches).
"""

import collections
import itertools

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

AXIS = 'data'


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,))


def replicate(mesh, tree):
  """Host arrays -> arrays replicated on every device of the mesh (each
  process passes the same full value)."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
    tree,
  )


def shard_batch(mesh, tree):
  """This process's rows of a global batch -> arrays split over 'data'."""
  sharding = NamedSharding(mesh, P(AXIS))
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, x), tree
  )


def prefetch(put, host_batches, size: int = 2):
  """Yields put(batch) for each host batch, with `size` more already put:
  device copies are asynchronous, so they overlap the running step."""
  queue = collections.deque()
  for batch in itertools.chain(host_batches, [None] * size):
    if batch is not None:
      queue.append(put(batch))
    if len(queue) > size or (batch is None and queue):
      yield queue.popleft()


def localise(mesh, tree):
  """Arrays replicated on the whole (maybe multi-host) mesh -> the same
  values replicated on `mesh`, this process's devices only."""
  sharding = NamedSharding(mesh, P())

  def move(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return jax.device_put(x, sharding)

  return jax.tree.map(move, tree)

