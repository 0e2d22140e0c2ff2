"""The 1-D device mesh and moving data onto it.

Every compiled step is jax.jit of a jax.shard_map over the mesh axis
'data', with per-device semantics as pmap had; shard_map is strict, so
inputs are put on the mesh first: replicated (the state, CIFAR's arrays)
or split by rows (batches).
"""

import collections
import itertools
import os

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


def initialize_distributed():
  """Starts jax.distributed when the usual multi-process environment is set:
  JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID), a
  SLURM job of several tasks, or Open MPI; JAX's own cluster detection
  fills in the rest. One process otherwise."""
  env = os.environ
  if 'JAX_COORDINATOR_ADDRESS' in env:
    # CPU collectives across processes (GPUs use NCCL regardless). Set
    # before initialising: asking for the backend here would start it.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
      env['JAX_COORDINATOR_ADDRESS'],
      num_processes=int(env['JAX_NUM_PROCESSES']),
      process_id=int(env['JAX_PROCESS_ID']),
    )
  elif (
    int(env.get('SLURM_NTASKS', '1')) > 1
    or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
  ):
    jax.distributed.initialize()
