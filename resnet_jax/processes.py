"""A run's processes: how many, which devices each owns, and where they
meet, read from the environment and checked before JAX starts; then
jax.distributed joins them.

Three ways to start several processes:

- JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (any
  cluster, or several processes on one machine);
- a SLURM job step of several tasks (`srun`): one process per GPU, as
  JAX's own SLURM detection, NVIDIA's JAX containers and MaxText assume,
  each seeing its node's GPUs and owning the one of its local rank (more
  generally, each owning its share: GPUs on the node / tasks on the node).
  JAX's detection is not used as it is: with one task per node it would
  give each node's process its first GPU only, silently;
- Open MPI's mpirun (JAX's own detection).

`plan(env)` is a pure function of the environment: every trap it knows
(a shell inside salloc, --gpus-per-task, a partial node, a coordinator
address inherited from the submitting shell) is a ConfigError of one line
before any process waits on another. `start` initialises JAX from the
plan, says on one line who this process is and what it owns, and refuses
a job whose processes x local devices is not what it asked for.
"""

import dataclasses
import os
import re
import sys

from resnet_jax.errors import ConfigError

# JAX's own range for a SLURM job's coordinator port: 61440 + job id % 4096.
PORT_RANGE = 2**12
DEFAULT_PORT_BASE = 65535 - PORT_RANGE + 1
DEFAULT_INIT_TIMEOUT_S = 300  # jax.distributed.initialize's default


@dataclasses.dataclass(frozen=True)
class Expected:
  """What a job asked for (the launcher knows; None where nobody said):
  processes on each node and devices each process owns."""

  nodes: int
  tasks_per_node: int
  devices_per_task: int
  platform: str  # 'gpu' or 'cpu'

  @property
  def devices(self) -> int:
    return self.nodes * self.tasks_per_node * self.devices_per_task

  def describe(self) -> str:
    return (
      f'{self.nodes} node(s) x {self.tasks_per_node} process(es) x '
      f'{self.devices_per_task} {self.platform} device(s) = {self.devices}'
    )


@dataclasses.dataclass(frozen=True)
class Plan:
  """How this process joins the others (num_processes 1: it runs alone)."""

  source: str  # 'single', 'env', 'slurm' or 'mpi'
  num_processes: int = 1
  process_id: int = 0
  coordinator: str | None = None
  local_device_ids: tuple[int, ...] | None = None  # GPUs it owns; None: all
  node: str | None = None
  local_rank: int | None = None
  init_timeout_s: int = DEFAULT_INIT_TIMEOUT_S


def first_host(nodelist: str) -> str:
  """The first host of a SLURM node list: 'n1', 'n1,n2', 'n[1-4],m2',
  'gpu[007,009-012]' -> 'n1', 'n1', 'n1', 'gpu007'."""
  m = re.match(r'([^,\[]*)(?:\[([^,\-\]]+))?', nodelist.strip())
  if not m or not m.group(1) and not m.group(2):
    raise ConfigError(f'SLURM_STEP_NODELIST={nodelist!r}: no host in it')
  return m.group(1) + (m.group(2) or '')


def tasks_on_node(tasks_per_node: str, node_id: int) -> int:
  """SLURM's per-node task counts ('2(x3),1') -> node `node_id`'s."""
  counts = []
  for part in tasks_per_node.split(','):
    m = re.fullmatch(r'(\d+)(?:\(x(\d+)\))?', part.strip())
    if not m:
      raise ConfigError(f'tasks per node {tasks_per_node!r}: unreadable')
    counts += [int(m.group(1))] * int(m.group(2) or 1)
  if not 0 <= node_id < len(counts):
    raise ConfigError(
      f'node {node_id} is not in the tasks per node {tasks_per_node!r}'
    )
  return counts[node_id]


def coordinator_port(env, base: int | None = None) -> int:
  """The coordinator's port of a SLURM job. Default: JAX's rule, 61440 +
  the job id mod 4096, where an array task counts as its array's id plus
  its index, so that two tasks of one array (up to 4096 tasks) never share
  a port on a node. With `base`: base + the array index (0 outside an
  array)."""
  in_array = 'SLURM_ARRAY_TASK_ID' in env
  index = _int(env, 'SLURM_ARRAY_TASK_ID') if in_array else 0
  if base is not None:
    return base + index
  if in_array:
    job = _int(env, 'SLURM_ARRAY_JOB_ID') + index
  else:
    job = _int(env, 'SLURM_JOB_ID')
  return DEFAULT_PORT_BASE + job % PORT_RANGE


def check_port_base(base: int | None, array_size: int = 1):
  """A --coordinator_port whose every array task's port is a valid one."""
  if base is None:
    return
  if not 1024 <= base or base + array_size - 1 > 65535:
    raise ConfigError(
      f'--coordinator_port={base}: the array tasks listen on {base} to '
      f'{base + array_size - 1}; choose a base in 1024..{65536 - array_size}'
    )


def _int(env, name: str, default: int | None = None) -> int:
  value = env.get(name)
  if value is None:
    if default is None:
      raise ConfigError(f'{name} is not set')
    return default
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f'{name}={value!r} is not a number') from None


def _text(env, name: str) -> str:
  if name not in env:
    raise ConfigError(f'{name} is not set')
  return env[name]


def _visible_gpus(env) -> int | None:
  """GPUs this process can see on its node, where the environment says."""
  visible = env.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return len([d for d in visible.split(',') if d.strip()])
  if 'SLURM_GPUS_ON_NODE' in env:
    return _int(env, 'SLURM_GPUS_ON_NODE')
  return None


def _slurm_plan(env, expected, port_base, init_timeout_s) -> Plan:
  tasks = _int(env, 'SLURM_NTASKS')  # in a step: the step's tasks
  if 'JAX_COORDINATOR_ADDRESS' in env:
    raise ConfigError(
      f'JAX_COORDINATOR_ADDRESS={env["JAX_COORDINATOR_ADDRESS"]} is set in '
      f'a SLURM task of {tasks}: it came from the shell that submitted the '
      'job (sbatch exports it); unset it there, SLURM says where the '
      'coordinator is'
    )
  per_task = {
    k: v
    for k, v in env.items()
    if k == 'SLURM_GPUS_PER_TASK' or k == 'SLURM_TRES_PER_TASK' and 'gpu' in v
  }
  if per_task:
    name, value = next(iter(per_task.items()))
    raise ConfigError(
      f'{name}={value}: --gpus-per-task gives each task a GPU of its own '
      'and hides the others, which JAX cannot then share out; ask for '
      '--gpus-per-node (all of them, one task per GPU) instead'
    )
  local_rank = _int(env, 'SLURM_LOCALID')
  here = tasks_on_node(
    _text(env, 'SLURM_STEP_TASKS_PER_NODE'), _int(env, 'SLURM_NODEID')
  )
  node = env.get('SLURMD_NODENAME')
  gpus = _visible_gpus(env)
  owned = None
  if gpus:
    if gpus % here:
      raise ConfigError(
        f'node {node}: {gpus} GPUs for {here} tasks do not share out; '
        'ask for as many tasks per node as GPUs per node'
      )
    share = gpus // here
    if expected is not None and expected.platform == 'gpu':
      if share != expected.devices_per_task:
        raise ConfigError(
          f'node {node} gave this job {gpus} GPUs for {here} tasks, '
          f'{share} each, where it asked {expected.devices_per_task} each '
          f'({expected.describe()}): a partial node; ask for whole nodes '
          '(--exclusive) or fewer GPUs per node'
        )
    owned = tuple(range(local_rank * share, (local_rank + 1) * share))
  elif expected is not None and expected.platform == 'gpu':
    raise ConfigError(
      f'node {node}: this task sees no GPU (no CUDA_VISIBLE_DEVICES or '
      f'SLURM_GPUS_ON_NODE) where the job asked for {expected.describe()}'
    )
  nodelist = _text(env, 'SLURM_STEP_NODELIST')
  return Plan(
    'slurm',
    num_processes=tasks,
    process_id=_int(env, 'SLURM_PROCID'),
    coordinator=f'{first_host(nodelist)}:{coordinator_port(env, port_base)}',
    local_device_ids=owned,
    node=node,
    local_rank=local_rank,
    init_timeout_s=init_timeout_s,
  )


def plan(
  env=None,
  expected: Expected | None = None,
  port_base: int | None = None,
  init_timeout_s: int = DEFAULT_INIT_TIMEOUT_S,
) -> Plan:
  """This process's place among the run's, from `env` (os.environ)."""
  env = os.environ if env is None else env
  in_step = 'SLURM_STEP_NODELIST' in env  # srun's, as JAX reads it
  slurm_tasks = _int(env, 'SLURM_NTASKS', 1)
  if 'SLURM_JOB_ID' in env and not in_step and slurm_tasks > 1:
    raise ConfigError(
      f'SLURM_NTASKS={slurm_tasks}, but this process is not a task of a '
      'job step (no SLURM_STEP_NODELIST: a shell inside salloc, or a batch '
      'script); start it with srun to run that many, or unset SLURM_NTASKS '
      'to run one process'
    )
  if in_step and slurm_tasks > 1:
    return _slurm_plan(env, expected, port_base, init_timeout_s)
  if 'JAX_COORDINATOR_ADDRESS' in env:
    return Plan(
      'env',
      num_processes=_int(env, 'JAX_NUM_PROCESSES'),
      process_id=_int(env, 'JAX_PROCESS_ID'),
      coordinator=env['JAX_COORDINATOR_ADDRESS'],
      init_timeout_s=init_timeout_s,
    )
  if _int(env, 'OMPI_COMM_WORLD_SIZE', 1) > 1:
    return Plan(
      'mpi',
      num_processes=_int(env, 'OMPI_COMM_WORLD_SIZE'),
      process_id=_int(env, 'OMPI_COMM_WORLD_RANK'),
      init_timeout_s=init_timeout_s,
    )
  return Plan('single', node=env.get('SLURMD_NODENAME'))


def initialize(p: Plan):
  """jax.distributed from the plan (nothing for one process)."""
  if p.num_processes == 1:
    return
  import jax

  # CPU collectives across processes (GPUs use NCCL regardless). Set
  # before initialising: asking for the backend here would start it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if p.source == 'mpi':
    jax.distributed.initialize(initialization_timeout=p.init_timeout_s)
    return
  jax.distributed.initialize(
    p.coordinator,
    num_processes=p.num_processes,
    process_id=p.process_id,
    local_device_ids=list(p.local_device_ids)
    if p.local_device_ids is not None
    else None,
    initialization_timeout=p.init_timeout_s,
  )


def describe(p: Plan) -> str:
  """Who this process is and what it owns, and the product, in one line
  (after JAX has started)."""
  import jax

  local = jax.local_devices()
  where = [f'pid {os.getpid()}']
  if p.source == 'slurm':
    where = [f'SLURM task {p.process_id}', f'local rank {p.local_rank}', *where]
  if p.node:
    where.insert(1 if p.source == 'slurm' else 0, f'node {p.node}')
  owns = ', '.join(
    f'{d.platform} {d.local_hardware_id} (device {d.id})' for d in local
  )
  return (
    f'process {jax.process_index()} of {jax.process_count()} '
    f'({", ".join(where)}) owns {owns}; {jax.process_count()} processes x '
    f'{len(local)} local devices = {jax.device_count()} devices'
  )


def check(p: Plan, expected: Expected | None = None):
  """Refuses a run whose processes x local devices is not the global
  device count, or not what the job asked for."""
  import jax

  processes, local, total = (
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  shape = f'{processes} processes x {local} local devices'
  if processes != p.num_processes:
    raise ConfigError(
      f'JAX has {processes} processes where the environment starts '
      f'{p.num_processes}'
    )
  if processes * local != total:
    raise ConfigError(
      f'{shape} is not the {total} devices JAX counts: the processes own '
      'different numbers of devices; give each the same'
    )
  if expected is not None and (
    processes != expected.nodes * expected.tasks_per_node
    or local != expected.devices_per_task
  ):
    raise ConfigError(
      f'this job has {shape} = {total} devices, where it asked for '
      f'{expected.describe()}'
    )


def start(
  expected: Expected | None = None,
  port_base: int | None = None,
  init_timeout_s: int = DEFAULT_INIT_TIMEOUT_S,
  env=None,
  say: bool = False,
) -> Plan:
  """plan, initialize and check; with `say` (or several processes) prints
  describe's line to stderr."""
  p = plan(env, expected, port_base, init_timeout_s)
  initialize(p)
  if say or p.num_processes > 1:
    print(describe(p), file=sys.stderr, flush=True)
  check(p, expected)
  return p
