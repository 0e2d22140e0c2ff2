"""A run's processes read from made-up environments (resnet_jax/processes.py):
SLURM's one task per GPU and one task per node, the traps refused in one
line before JAX starts, the coordinator's port; and the launcher's side
(launch/slurm.Resources) of the same shapes."""

import os

import pytest

from resnet_jax import processes
from resnet_jax.errors import ConfigError
from resnet_jax.launch import slurm
from resnet_jax.launch import slurm_queue


def step_env(procid, ntasks=16, per_node='8(x2)', nodes='gpu[007-008]', **more):
  """The variables srun gives task `procid` of a two-node step."""
  local = procid % 8
  env = dict(
    SLURM_JOB_ID='4242',
    SLURM_JOB_NODELIST=nodes,
    SLURM_STEP_NODELIST=nodes,
    SLURM_STEP_ID='0',
    SLURM_NTASKS=str(ntasks),
    SLURM_STEP_NUM_TASKS=str(ntasks),
    SLURM_STEP_TASKS_PER_NODE=per_node,
    SLURM_PROCID=str(procid),
    SLURM_LOCALID=str(local),
    SLURM_NODEID=str(procid // 8),
    SLURMD_NODENAME=f'gpu00{7 + procid // 8}',
    CUDA_VISIBLE_DEVICES='0,1,2,3,4,5,6,7',
    SLURM_GPUS_ON_NODE='8',
  )
  env.update(more)
  return env


GPUS_16 = processes.Expected(2, 8, 1, 'gpu')


def test_one_task_per_gpu_owns_the_gpu_of_its_local_rank():
  plans = [processes.plan(step_env(i), GPUS_16) for i in range(16)]
  assert [p.local_device_ids for p in plans] == [(i % 8,) for i in range(16)]
  assert [p.process_id for p in plans] == list(range(16))
  assert {p.num_processes for p in plans} == {16}
  assert {p.source for p in plans} == {'slurm'}
  # Every process meets the first node's, on one port: JAX's for job 4242.
  assert {p.coordinator for p in plans} == {f'gpu007:{61440 + 4242 % 4096}'}
  assert plans[9].node == 'gpu008' and plans[9].local_rank == 1


def test_one_task_per_node_owns_all_its_gpus_not_the_first_only():
  """JAX's own detection would give each process [SLURM_LOCALID] = [0]."""
  env = step_env(0, ntasks=2, per_node='1(x2)', SLURM_LOCALID='0')
  p = processes.plan(env, processes.Expected(2, 1, 8, 'gpu'))
  assert p.local_device_ids == tuple(range(8))
  env = step_env(
    1, ntasks=2, per_node='1(x2)', SLURM_LOCALID='0', SLURM_NODEID='1'
  )
  assert processes.plan(env).local_device_ids == tuple(range(8))
  # Two tasks per node of four GPUs: two GPUs each, by local rank.
  env = step_env(
    3,
    ntasks=4,
    per_node='2(x2)',
    SLURM_LOCALID='1',
    SLURM_NODEID='1',
    CUDA_VISIBLE_DEVICES='0,1,2,3',
  )
  assert processes.plan(env).local_device_ids == (2, 3)


def test_gpus_known_from_slurm_alone_share_out_the_same():
  env = step_env(10)
  del env['CUDA_VISIBLE_DEVICES']
  assert processes.plan(env, GPUS_16).local_device_ids == (2,)


def test_cpu_tasks_own_their_own_host_devices():
  env = step_env(
    2,
    ntasks=4,
    per_node='2(x2)',
    SLURM_LOCALID='0',
    SLURM_NODEID='1',
    nodes='rjn[1-2]',
  )
  del env['CUDA_VISIBLE_DEVICES'], env['SLURM_GPUS_ON_NODE']
  p = processes.plan(env, processes.Expected(2, 2, 1, 'cpu'))
  assert p.local_device_ids is None and p.coordinator.startswith('rjn1:')
  assert (p.num_processes, p.process_id) == (4, 2)


@pytest.mark.parametrize(
  'nodelist, first',
  [
    ('n1', 'n1'),
    ('n1,n2', 'n1'),
    ('rjn[1-2]', 'rjn1'),
    ('gpu[007,009-012],cpu3', 'gpu007'),
    ('a-b-1', 'a-b-1'),
    ('node-[10-11]', 'node-10'),
  ],
)
def test_the_coordinator_is_the_first_host_of_the_node_list(nodelist, first):
  assert processes.first_host(nodelist) == first


def test_tasks_per_node_are_read_as_slurm_writes_them():
  assert [processes.tasks_on_node('2(x3),1', i) for i in range(4)] == [
    2,
    2,
    2,
    1,
  ]
  assert processes.tasks_on_node('8', 0) == 8
  assert processes.tasks_on_node('3,1', 1) == 1
  with pytest.raises(ConfigError, match='node 2 is not in'):
    processes.tasks_on_node('4(x2)', 2)


def test_two_array_tasks_never_share_a_port():
  def port(job, array, index, base=None):
    env = dict(
      SLURM_JOB_ID=str(job),
      SLURM_ARRAY_JOB_ID=str(array),
      SLURM_ARRAY_TASK_ID=str(index),
    )
    return processes.coordinator_port(env, base)

  # Job ids 4096 apart fall on one port by JAX's rule; an array's tasks
  # count as array id + index instead, all different up to 4096 tasks.
  ports = {port(job, 100, i) for i, job in enumerate((200, 200 + 4096, 17))}
  assert len(ports) == 3 and all(61440 <= p <= 65535 for p in ports)
  # Outside an array: JAX's own rule.
  assert processes.coordinator_port(dict(SLURM_JOB_ID='5000')) == (
    61440 + 5000 % 4096
  )
  assert port(200, 100, 7) == 61440 + 107
  assert [port(1, 1, i, base=20000) for i in range(3)] == [20000, 20001, 20002]
  assert processes.coordinator_port(dict(SLURM_JOB_ID='9'), 20000) == 20000
  processes.check_port_base(65500, 36)
  processes.check_port_base(1024)
  processes.check_port_base(65535)  # one run: one port
  with pytest.raises(ConfigError, match='--coordinator_port=1023'):
    processes.check_port_base(1023)
  with pytest.raises(ConfigError, match='choose a base in 1024..65500'):
    processes.check_port_base(65501, 36)
  with pytest.raises(ConfigError, match='--coordinator_port=80'):
    processes.check_port_base(80)


def test_an_init_timeout_and_port_reach_the_plan():
  p = processes.plan(step_env(0), port_base=30000, init_timeout_s=42)
  assert p.coordinator == 'gpu007:30000' and p.init_timeout_s == 42


@pytest.mark.parametrize(
  'env, message',
  [
    # A shell inside `salloc -n 4`: the job's variables, no step's.
    (
      dict(SLURM_JOB_ID='7', SLURM_NTASKS='4', SLURM_PROCID='0'),
      r'SLURM_NTASKS=4, but this process is not a task of a job step .*'
      'start it with srun',
    ),
    (
      step_env(3, SLURM_GPUS_PER_TASK='1', CUDA_VISIBLE_DEVICES='0'),
      r'SLURM_GPUS_PER_TASK=1: --gpus-per-task gives each task a GPU of its '
      'own',
    ),
    (
      step_env(3, SLURM_TRES_PER_TASK='cpu:4,gres/gpu:1'),
      r'SLURM_TRES_PER_TASK=cpu:4,gres/gpu:1: --gpus-per-task',
    ),
    # A partial node: 4 of the 8 GPUs asked for, 4 tasks on it.
    (
      step_env(
        1,
        per_node='4(x2)',
        ntasks=8,
        CUDA_VISIBLE_DEVICES='0,1,2,3',
        SLURM_GPUS_ON_NODE='4',
      ),
      r'node gpu007 gave this job 4 GPUs for 4 tasks, 1 each, where it '
      r'asked 2 each .*a partial node',
    ),
    (
      step_env(1, CUDA_VISIBLE_DEVICES='0,1,2'),
      r'node gpu007: 3 GPUs for 8 tasks do not share out',
    ),
    (
      {
        k: v
        for k, v in step_env(1).items()
        if k not in ('CUDA_VISIBLE_DEVICES', 'SLURM_GPUS_ON_NODE')
      },
      r'node gpu007: this task sees no GPU .* where the job asked for 2 '
      r'node\(s\) x 8 process\(es\) x 1 gpu device\(s\) = 16',
    ),
    (
      step_env(5, JAX_COORDINATOR_ADDRESS='10.0.0.1:1234'),
      r'JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 is set in a SLURM task of 16: '
      'it came from the shell that submitted the job',
    ),
  ],
)
def test_the_known_traps_end_in_one_line_before_jax_starts(env, message):
  expected = GPUS_16
  if 'SLURM_GPUS_ON_NODE' in env and env['SLURM_GPUS_ON_NODE'] == '4':
    expected = processes.Expected(2, 4, 2, 'gpu')
  with pytest.raises(ConfigError, match=message) as raised:
    processes.plan(env, expected)
  assert '\n' not in str(raised.value)


def test_one_process_and_the_plain_variables_plan_as_before():
  assert processes.plan({}).num_processes == 1
  # A batch script's one task (no step) runs alone.
  alone = processes.plan(dict(SLURM_JOB_ID='3', SLURM_NTASKS='1'))
  assert alone.source == 'single'
  assert processes.plan(dict(SLURM_JOB_ID='3')).source == 'single'
  # srun -n1: a step of one task.
  one = dict(step_env(0), SLURM_NTASKS='1', SLURM_STEP_NUM_TASKS='1')
  assert processes.plan(one) == processes.Plan('single', node='gpu007')
  env = processes.plan(
    dict(
      JAX_COORDINATOR_ADDRESS='127.0.0.1:5',
      JAX_NUM_PROCESSES='2',
      JAX_PROCESS_ID='1',
    )
  )
  assert (env.source, env.coordinator, env.num_processes, env.process_id) == (
    'env',
    '127.0.0.1:5',
    2,
    1,
  )
  mpi = processes.plan(dict(OMPI_COMM_WORLD_SIZE='4', OMPI_COMM_WORLD_RANK='3'))
  assert (mpi.source, mpi.num_processes, mpi.process_id) == ('mpi', 4, 3)
  two = processes.plan(
    dict(OMPI_COMM_WORLD_SIZE='2', OMPI_COMM_WORLD_RANK='1'), init_timeout_s=7
  )
  assert (two.num_processes, two.init_timeout_s) == (2, 7)
  env = processes.plan(
    dict(JAX_COORDINATOR_ADDRESS='h:5', JAX_NUM_PROCESSES='2',
         JAX_PROCESS_ID='0'),
    init_timeout_s=9,
  )
  assert env.init_timeout_s == 9


def test_this_processs_own_environment_is_read_by_default(monkeypatch):
  for name in list(os.environ):
    if name.startswith(('SLURM', 'JAX_', 'OMPI_')):
      monkeypatch.delenv(name)
  assert processes.plan() == processes.Plan('single')
  monkeypatch.setenv('SLURM_JOB_ID', '1')
  monkeypatch.setenv('SLURM_NTASKS', '2')
  with pytest.raises(ConfigError, match='SLURM_NTASKS=2, but'):
    processes.plan()


@pytest.mark.parametrize(
  'change, message',
  [
    (dict(SLURM_PROCID='three'), "SLURM_PROCID='three' is not a number"),
    (dict(SLURM_LOCALID=None), 'SLURM_LOCALID is not set'),
    (dict(SLURM_STEP_TASKS_PER_NODE=None),
     'SLURM_STEP_TASKS_PER_NODE is not set'),
    (dict(SLURM_STEP_TASKS_PER_NODE='8(x'), r"tasks per node '8\(x': "
     'unreadable'),
    (dict(SLURM_STEP_NODELIST=',n2'), "SLURM_STEP_NODELIST=',n2': no host"),
  ],
)
def test_an_unreadable_slurm_environment_is_one_line(change, message):
  env = step_env(1)
  for name, value in change.items():
    if value is None:
      del env[name]
    else:
      env[name] = value
  with pytest.raises(ConfigError, match=message):
    processes.plan(env)


def test_a_job_whose_devices_are_not_what_it_asked_for_is_refused():
  """This process: one process of the session's 8 CPU devices."""
  single = processes.plan({})
  processes.check(single, processes.Expected(1, 1, 8, 'cpu'))
  with pytest.raises(
    ConfigError,
    match=r'this job has 1 processes x 8 local devices = 8 devices, where it '
    r'asked for 2 node\(s\) x 2 process\(es\) x 1 cpu device\(s\) = 4',
  ):
    processes.check(single, processes.Expected(2, 2, 1, 'cpu'))
  four = processes.Plan('slurm', num_processes=4)
  with pytest.raises(
    ConfigError, match='JAX has 1 processes where the environment starts 4'
  ):
    processes.check(four)
  # The line of a SLURM task, and of a process alone on a SLURM node.
  task = processes.Plan('slurm', process_id=0, node='n1', local_rank=0)
  assert processes.describe(task).startswith(
    f'process 0 of 1 (SLURM task 0, node n1, local rank 0, pid {os.getpid()}) '
    'owns cpu 0 (device 0), cpu 1'
  )
  alone = processes.Plan('single', node='n9')
  assert processes.describe(alone).startswith(
    f'process 0 of 1 (node n9, pid {os.getpid()}) owns'
  )
  line = processes.describe(single)
  assert line.startswith('process 0 of 1 (pid ') and line.endswith(
    '1 processes x 8 local devices = 8 devices'
  )
  assert 'owns cpu 0 (device 0), cpu 1 (device 1)' in line


def test_the_launcher_asks_one_process_per_gpu_and_refuses_what_cannot_share():
  r = slurm.Resources(nodes=2, gpus_per_node=8)
  params = r.parameters('t3')
  assert params['tasks_per_node'] == 8 and params['gpus_per_node'] == 8
  assert params['slurm_srun_args'] == ['--kill-on-bad-exit=1']
  assert r.expected() == processes.Expected(2, 8, 1, 'gpu')
  per_node = slurm.Resources(nodes=2, gpus_per_node=8, tasks_per_node=1)
  assert per_node.parameters('t3')['tasks_per_node'] == 1
  assert per_node.expected() == processes.Expected(2, 1, 8, 'gpu')
  cpu = slurm.Resources(
    nodes=2, gpus_per_node=0, tasks_per_node=2, host_devices=1
  )
  assert cpu.expected() == processes.Expected(2, 2, 1, 'cpu')
  assert slurm.Resources(gpus_per_node=0).tasks == 1
  assert slurm.Resources().max_requeues == 30
  with pytest.raises(
    ConfigError, match='--tasks_per_node=3 does not divide --gpus_per_node=8'
  ):
    slurm.Resources(gpus_per_node=8, tasks_per_node=3).check()
  with pytest.raises(ConfigError, match='--max_requeues=-1 is negative'):
    slurm.Resources(max_requeues=-1).check()
  with pytest.raises(ConfigError, match='--init_timeout_s=0'):
    slurm.Resources(init_timeout_s=0).check()
  with pytest.raises(
    ConfigError, match='the array tasks listen on 65530 to 65539'
  ):
    slurm.Resources(coordinator_port=65530).check(array_size=10)
  with pytest.raises(
    ConfigError,
    match='JAX_COORDINATOR_ADDRESS=h:1 is set '
    'in this shell, and sbatch would pass it',
  ):
    slurm.check_environment(dict(JAX_COORDINATOR_ADDRESS='h:1'))
  slurm.check_environment({})


def test_srun_says_which_task_on_which_node_died(tmp_path):
  log = tmp_path / 'err'
  log.write_text(
    'submitit INFO - Starting with JobEnvironment(job_id=3, ...)\n'
    'srun: error: rjn1: task 1: Terminated\n'  # an earlier slice's
    'submitit INFO - Starting with JobEnvironment(job_id=3, ...)\n'
    'srun: error: rjn2: task 3: Killed\n'
    'srun: launch/slurm: _step_signal: Terminating StepId=3.0\n'
    'srun: error: rjn1: tasks 0-1: Terminated\n'
  )
  assert slurm_queue.srun_error(str(log)) == 'task 3 on node rjn2: Killed'
  log.write_text('srun: error: n7: tasks 0,2-3: Exited with exit code 1\n')
  assert slurm_queue.srun_error(str(log)) == (
    'tasks 0,2-3 on node n7: Exited with exit code 1'
  )
  assert slurm_queue.srun_error(str(tmp_path / 'none')) is None


@pytest.mark.parametrize(
  'flags, env, message',
  [
    (
      ['--gpus_per_node=8', '--tasks_per_node=3'],
      {},
      '--tasks_per_node=3 does not divide --gpus_per_node=8',
    ),
    (
      [],
      dict(JAX_COORDINATOR_ADDRESS='10.1.1.1:99'),
      'JAX_COORDINATOR_ADDRESS=10.1.1.1:99 is set in this shell',
    ),
  ],
)
def test_the_launcher_refuses_before_anything_is_written(
  tmp_path, flags, env, message
):
  """Through the command: one line, exit 2, no folder made (the other
  checks of Resources.check run in the same place)."""
  from tests.helpers import error_lines
  from tests.helpers import run_cli

  done = run_cli(
    '-m',
    'resnet_jax.reproduce',
    'cifar_figure6',
    '--runs=resnet20',
    f'--workdir={tmp_path}/sweep',
    '--launcher=slurm',
    *flags,
    **env,
  )
  assert done.returncode == 2, done.stderr[-2000:]
  assert [line for line in error_lines(done.stderr) if message in line]
  assert len(error_lines(done.stderr)) == 1
  assert not (tmp_path / 'sweep').exists()
