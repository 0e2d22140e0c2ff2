"""One command per experiment of the paper: its training runs, a ledger,
the plots.

  python -m resnet_jax.reproduce cifar_table6 --workdir=runs/table6
  python -m resnet_jax.reproduce cifar_figure6 --workdir=runs/fig6 --seeds=3
  python -m resnet_jax.reproduce cifar_figure6 --workdir=/tmp/f6 \
      --steps_scale=0.01 --set=data.local_dir=data/cifar10-sample \
      --set=data.validation_size=200 --set=data.eval_on=validation
  python -m resnet_jax.reproduce imagenet_table3 --workdir=runs/t3 \
      --set=data.image_folder=/data/imagenet --dry_run

Each run trains in WORKDIR/RUN/seedK with the experiment's config and the
--set overrides; a run with a result.json is finished and skipped, any
other resumes from its checkpoints. A run folder that holds another config
than this command's (WORKDIR/RUN/seedK/planned.json) is refused, naming
the first key that differs; --retrain moves it aside and trains afresh.
--steps_scale shrinks every duration
(length, learning-rate boundaries, warm-up, log/eval/checkpoint intervals)
for a quick look. Then WORKDIR/ledger.csv and ledger.md list each run:
parameters, the paper's error, ours (mean +- std over seeds), steps,
wall-clock, device and commit; WORKDIR/curves.png plots the training and
test error curves (Figure 6's style) and, for cifar_figure6/7,
WORKDIR/responses.png the std of each layer's response (Figure 7; each
run's seed 0, saved in its responses.json). WORKDIR/experiment.json
records the command; `python -m resnet_jax.results` turns such folders
into the README's results section. `--runs=a,b` trains only those runs
of the experiment; `--dry_run` prints the train.py commands. EXPERIMENT
is a built-in name or FILE.py:NAME, the EXPERIMENTS[NAME] of a file of
yours (experiments.PlannedRun's, each with its own overrides if it has any).

Many runs at once (README, "Many runs at once"):

  # a workstation: 4 runs at a time, 2 GPUs each, the rest queued
  python -m resnet_jax.reproduce cifar_table6 --workdir=runs/t6 --seeds=5 \
      --launcher=local --jobs=4 --devices_per_job=2
  # a SLURM cluster: one job array, one task per run
  python -m resnet_jax.reproduce imagenet_table3 --workdir=runs/t3 \
      --launcher=slurm --partition=gpu --nodes=2 --gpus_per_node=8 \
      --time=3-00:00:00 --nowait

--jobs=1 (the default) trains the runs one after another in this
process. With --jobs=N each run is a process of its own, its output in
WORKDIR/RUN/seedK/log.txt; a run that fails is a ledger row marked
failed and the others go on. With --launcher=slurm the command waits for
the array and writes the ledger; with --nowait it returns once the array
is queued, and the same command later (it submits only what is neither
finished nor queued) or --collect writes the ledger.
"""

import os
import re
import shlex
import sys

from absl import flags

from resnet_jax import command as command_line
from resnet_jax.errors import ConfigError
from resnet_jax.errors import Stopped
from resnet_jax.paper import experiments
from resnet_jax.paper.reproduce import check_planned
from resnet_jax.paper.reproduce import command
from resnet_jax.paper.reproduce import finish
from resnet_jax.paper.reproduce import in_stages
from resnet_jax.paper.reproduce import markdown
from resnet_jax.paper.reproduce import plan_runs
from resnet_jax.paper.reproduce import ready
from resnet_jax.paper.reproduce import run_plan
from resnet_jax.paper.reproduce import select
from resnet_jax.paper.reproduce import teacher_task
from resnet_jax.paper.reproduce import unfinished
from resnet_jax.run import files
from resnet_jax.run import layout
from resnet_jax.run import lock

FLAGS = flags.FLAGS


def reproduce_command(name: str, root: str, launcher: bool = False) -> str:
  """This command line, as the flags have it (for experiment.json; with
  `launcher`, its --launcher too, as --collect needs it)."""
  args = [name, f'--workdir={root}', f'--seeds={FLAGS.seeds}']
  if launcher:
    args.append(f'--launcher={FLAGS.launcher}')
  if FLAGS.steps_scale != 1:
    args.append(f'--steps_scale={FLAGS.steps_scale:g}')
  args += [f'--set={item}' for item in FLAGS.set]
  if FLAGS.runs:
    args.append(f'--runs={",".join(FLAGS.runs)}')
  return ' '.join(['python -m resnet_jax.reproduce', *map(shlex.quote, args)])


SLURM_FLAGS = (
  'partition',
  'account',
  'qos',
  'time',
  'nodes',
  'gpus_per_node',
  'tasks_per_node',
  'cpus_per_task',
  'mem_gb',
  'sbatch',
  'max_running',
  'max_requeues',
  'coordinator_port',
  'init_timeout_s',
  'nowait',
  'poll_s',
)
LOCAL_FLAGS = ('jobs', 'devices_per_job')


def check_launcher_flags():
  """Each launcher's flags with that launcher only, every count positive."""
  other = LOCAL_FLAGS if FLAGS.launcher == 'slurm' else SLURM_FLAGS
  given = [name for name in other if FLAGS[name].present]
  if given:
    raise ConfigError(
      f'--{given[0]} is not a flag of --launcher={FLAGS.launcher} (the '
      'local launcher takes --jobs and --devices_per_job; slurm its '
      'resources, --nowait and --poll_s)'
    )
  for name in ('jobs', 'nodes', 'cpus_per_task', 'max_running'):
    if FLAGS[name].value < 1:
      raise ConfigError(f'--{name}={FLAGS[name].value} must be at least 1')
  if FLAGS.gpus_per_node < 0:
    raise ConfigError(f'--gpus_per_node={FLAGS.gpus_per_node} is negative')
  if FLAGS.tasks_per_node is not None and FLAGS.tasks_per_node < 1:
    raise ConfigError(
      f'--tasks_per_node={FLAGS.tasks_per_node} must be at least 1'
    )
  if FLAGS.devices_per_job is not None and FLAGS.devices_per_job < 1:
    raise ConfigError(
      f'--devices_per_job={FLAGS.devices_per_job} must be at least 1'
    )


def minutes(text: str) -> int:
  """SLURM's time formats -> minutes: MM, HH:MM:SS, D-HH[:MM[:SS]]."""
  m = re.fullmatch(r'(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?', text.strip())
  if not m:
    raise ConfigError(
      f'--time={text}: expected minutes, HH:MM:SS or D-HH:MM:SS'
    )
  days, a, b, c = (int(g) if g else None for g in m.groups())
  if days is None and b is None:
    total = a  # minutes
  elif days is None and c is None:
    total = a + b / 60  # MM:SS
  else:
    hours, mins, secs = a, b or 0, c or 0
    total = (days or 0) * 1440 + hours * 60 + mins + secs / 60
  if total < 1:
    raise ConfigError(f'--time={text}: at least a minute')
  return int(round(total))


def resources():
  from resnet_jax.launch import local
  from resnet_jax.launch import slurm

  return slurm.Resources(
    partition=FLAGS.partition,
    account=FLAGS.account,
    qos=FLAGS.qos,
    time_min=minutes(FLAGS.time),
    nodes=FLAGS.nodes,
    gpus_per_node=FLAGS.gpus_per_node,
    tasks_per_node=FLAGS.tasks_per_node,
    cpus_per_task=FLAGS.cpus_per_task,
    mem_gb=FLAGS.mem_gb,
    sbatch=tuple(FLAGS.sbatch),
    max_running=FLAGS.max_running,
    max_requeues=FLAGS.max_requeues,
    coordinator_port=FLAGS.coordinator_port,
    init_timeout_s=FLAGS.init_timeout_s,
    # A CPU task's devices: what XLA_FLAGS, passed on by sbatch, gives it.
    host_devices=local.host_device_count(os.environ.get('XLA_FLAGS', '')) or 1,
  )


def launch(plan, root: str, name: str) -> bool:
  """Runs what is unfinished of experiment `name` with the chosen
  launcher; False when it returns before the runs end (--nowait)."""
  import jax

  if FLAGS.launcher == 'local' and FLAGS.jobs == 1:
    per_job = FLAGS.devices_per_job
    run_plan(plan, jax.devices()[:per_job] if per_job else None)
    return True
  # This process only plans and waits: it takes no accelerator from the
  # runs (the ledger's parameter counts need no more than the CPU).
  jax.config.update('jax_platforms', 'cpu')
  if FLAGS.launcher == 'local':
    from resnet_jax.launch import local

    task_dir = os.path.join(root, 'launch')
    in_stages(
      plan,
      lambda tasks: local.run_all(
        tasks, FLAGS.jobs, FLAGS.devices_per_job, task_dir
      ),
    )
    return True
  from resnet_jax.launch import slurm_queue

  submitted = submit_to_slurm(unfinished(plan), plan, root, name)
  if FLAGS.nowait:
    print(
      'not waiting (--nowait): run the same command again, or with '
      '--collect, to write the ledger once the runs end',
      file=sys.stderr,
    )
    return False
  slurm_queue.wait(
    submitted, FLAGS.poll_s, reproduce_command(name, root, launcher=True)
  )
  return True


def submit_to_slurm(left, plan, root: str, name: str) -> list:
  """Submits the tasks that are not queued already: those that can train
  now as one job array, each distillation student in an array held until
  its teacher's task has succeeded (afterok). Returns the job records of
  all of them, queued before or now."""
  from resnet_jax.launch import slurm
  from resnet_jax.launch import slurm_queue

  # Without the queue's word a queued run would be submitted again.
  queue = slurm_queue.answered('Nothing was submitted.')
  known = {r['workdir']: r for r in slurm.read_jobs(root)}
  waiting = [
    known[t.workdir]
    for t in left
    if t.workdir in known and known[t.workdir]['job_id'] in queue
  ]
  busy = {r['workdir'] for r in waiting}
  for r in waiting:
    print(
      f'{r["run"]} seed {r["seed"]}: already queued as job {r["job_id"]}',
      file=sys.stderr,
    )
  todo = [t for t in left if t.workdir not in busy]
  now, later = ready(todo, plan)
  submitted = _submit(now, root, name)
  records = waiting + submitted
  jobs = {r['workdir']: r['job_id'] for r in records}
  for r in waiting:  # a student still held on its teacher's last attempt
    if r.get('teacher') in {s['workdir'] for s in submitted}:
      slurm_queue.depend(r, jobs[r['teacher']])
  by_teacher = {}
  for task in later:  # its teacher is in the plan, not finished
    teacher = teacher_task(task, plan).workdir
    if teacher not in jobs:  # failed, neither queued nor submitted now
      print(
        f'{task.label}: its teacher has not finished; not submitted',
        file=sys.stderr,
      )
      continue
    by_teacher.setdefault(jobs[teacher], []).append(task)
  for job, students in by_teacher.items():
    records += _submit(students, root, name, after=(job,))
  return records


def _submit(tasks, root: str, name: str, after=()) -> list:
  """One array, and a line a run: its job, the array index, its log."""
  from resnet_jax.launch import slurm

  new = slurm.submit(tasks, root, os.path.basename(name), resources(), after)
  if new:
    array = new[0]['job_id'].split('_')[0]
    held = f', held until job {after[0]} succeeds' if after else ''
    print(
      f'submitted job array {array}: {len(new)} runs{held}', file=sys.stderr
    )
    for r in new:
      print(
        f'  {r["run"]} seed {r["seed"]}: job {r["job_id"]}, log '
        f'{os.path.join(r["workdir"], layout.LOG)}',
        file=sys.stderr,
      )
    print(f'slurm job {array}')
  return new


def collect(plan, root: str):
  """--collect: the runs that have left the queue settled (finished or
  failed), nothing submitted or waited for."""
  if FLAGS.launcher != 'slurm':
    return
  import jax

  jax.config.update('jax_platforms', 'cpu')
  from resnet_jax.launch import slurm_queue

  queue = slurm_queue.in_queue(slurm_queue.SQUEUE_PATIENCE_S)
  for record in plan_records(plan, root):
    slurm_queue.settle(record, queue)


def plan_records(plan, root: str) -> list:
  """The plan's job records in jobs.json, in the plan's order."""
  from resnet_jax.launch import slurm

  known = {r['workdir']: r for r in slurm.read_jobs(root)}
  return [known[t.workdir] for t in plan if t.workdir in known]


def status(plan, root: str):
  """--status: each run's state, once; nothing written. SLURM: what the
  queue and the run folders say of each submitted run; local: what the
  folders say (a run whose folder is held is training)."""
  if FLAGS.launcher == 'local':
    from resnet_jax.launch import local

    for task in plan:
      print(f'{task.label}: {local.describe(task.workdir)}')
    return
  from resnet_jax.launch import slurm_queue

  records = plan_records(plan, root)
  if not records:
    print(f'no run of this plan was submitted from {root}', file=sys.stderr)
    return
  print(slurm_queue.table(records, slurm_queue.in_queue()))


def submitted_workdirs(root: str) -> tuple[set, set]:
  """The run folders submitted to SLURM from this folder (jobs.json), and
  those of them that SLURM still holds (asked only for --retrain)."""
  if FLAGS.launcher != 'slurm':
    return set(), set()
  from resnet_jax.launch import slurm
  from resnet_jax.launch import slurm_queue

  records = slurm.read_jobs(root)
  queued = set()
  if FLAGS.retrain and records:
    queue = slurm_queue.answered('Nothing was moved aside.')
    queued = {r['workdir'] for r in records if r['job_id'] in queue}
  return {r['workdir'] for r in records}, queued


def main(argv):
  if len(argv) != 2:
    experiments.load('')  # the one-line list of experiments
  experiment = select(experiments.load(argv[1]), FLAGS.runs)
  if not FLAGS.workdir:
    raise ConfigError('--workdir=DIR is required')
  if FLAGS.seeds < 1:
    raise ConfigError(f'--seeds={FLAGS.seeds} must be at least 1')
  check_launcher_flags()
  root = FLAGS.workdir
  plan = plan_runs(experiment, root, FLAGS.seeds, FLAGS.set, FLAGS.steps_scale)
  if FLAGS.launcher == 'slurm':
    from resnet_jax.launch import slurm

    wanted = resources()
    wanted.parameters(argv[1])  # --time and --sbatch checked here
    wanted.check(len(plan))
    if not (FLAGS.status or FLAGS.collect or FLAGS.dry_run):
      slurm.check_environment()
      slurm.check_fits(wanted)
  if FLAGS.status:
    status(plan, root)
    return
  if FLAGS.dry_run:
    for task in plan:
      print(command(task.run, task.config, task.workdir))
    return
  with lock.hold_sweep(root):  # one command per experiment folder
    sweep(argv[1], experiment, plan, root)


def sweep(name: str, experiment, plan, root: str):
  """What the command does with the folder held: the plan checked against
  its folders, the runs launched or collected, the ledger."""
  check_planned(plan, FLAGS.retrain, *submitted_workdirs(root))
  meta = layout.path(root, layout.EXPERIMENT)
  if not (FLAGS.collect and os.path.exists(meta)):  # the command that ran
    files.write_json(
      meta,
      dict(
        experiment=name,
        description=experiment.description,
        command=reproduce_command(name, root),
        runs=[run.name for run in experiment.runs],
        seeds=FLAGS.seeds,
        steps_scale=FLAGS.steps_scale,
      ),
    )
  if FLAGS.collect:
    collect(plan, root)
  elif not launch(plan, root, name):
    return
  rows = finish(experiment, root, FLAGS.seeds)
  print(markdown(rows))
  failed = sum(r['failed'] for r in rows)
  if failed:
    raise Stopped(
      f'{failed} of {len(plan)} runs failed (ledger.md lists each with '
      'its error and log); the same command starts them again',
      1,
    )


def define_flags():
  """Defined when run as a command only: the module is also a library."""
  flags.DEFINE_string('workdir', None, 'Where the runs go.')
  flags.DEFINE_integer('seeds', 1, 'Runs of each network: seeds 0..N-1.')
  flags.DEFINE_float(
    'steps_scale', 1.0, 'Multiplies every duration of the recipe (0 < s <= 1).'
  )
  flags.DEFINE_multi_string(
    'set', [], 'KEY=VALUE override for every run, e.g. data.local_dir=DIR.'
  )
  flags.DEFINE_list(
    'runs', [], 'Only these runs of the experiment, e.g. plain20,resnet20.'
  )
  flags.DEFINE_bool('dry_run', False, 'Print the commands only.')
  flags.DEFINE_bool(
    'retrain',
    False,
    'Train afresh the runs whose folder holds another config (moved aside '
    'to RUN/seedK.replaced); without it such a rerun is refused.',
  )
  flags.DEFINE_enum(
    'launcher', 'local', ['local', 'slurm'], 'Where the runs train.'
  )
  flags.DEFINE_integer(
    'jobs', 1, 'local: runs at a time, each a process (1: this process).'
  )
  flags.DEFINE_integer(
    'devices_per_job',
    None,
    'local: devices of each run (GPUs, TPU chips or CPU host devices); '
    "default: the machine's shared out (CPU: XLA_FLAGS's count, or 1).",
  )
  flags.DEFINE_bool(
    'collect', False, 'Write the ledger from the runs that have ended.'
  )
  flags.DEFINE_bool(
    'status', False, "Print each run's state once (nothing is started)."
  )
  flags.DEFINE_string('partition', None, 'slurm: partition (-p).')
  flags.DEFINE_string('account', None, 'slurm: account (-A).')
  flags.DEFINE_string('qos', None, 'slurm: quality of service (--qos).')
  flags.DEFINE_string(
    'time', '1-00:00:00', 'slurm: time limit per run (then requeued).'
  )
  flags.DEFINE_integer('nodes', 1, 'slurm: nodes per run.')
  flags.DEFINE_integer('gpus_per_node', 1, 'slurm: GPUs per node (0: none).')
  flags.DEFINE_integer(
    'tasks_per_node',
    None,
    'slurm: processes per node, each owning GPUs/TASKS GPUs (default: one '
    'per GPU; 1 on CPU nodes).',
  )
  flags.DEFINE_integer(
    'cpus_per_task', 8, 'slurm: CPUs per process (its input pipeline).'
  )
  flags.DEFINE_float(
    'mem_gb', None, "slurm: memory per node (default: the cluster's)."
  )
  flags.DEFINE_multi_string(
    'sbatch', [], 'slurm: extra sbatch option KEY=VALUE, e.g. constraint=a100.'
  )
  flags.DEFINE_integer(
    'max_running', 256, 'slurm: tasks of the array at once (%M).'
  )
  flags.DEFINE_integer(
    'max_requeues',
    30,
    "slurm: requeues after a time limit a run may take (submitit's "
    'max_num_timeout; 30 fits 90 ImageNet epochs in 1-day slices).',
  )
  flags.DEFINE_integer(
    'coordinator_port',
    None,
    "slurm: jax.distributed's port, plus the array index (default: JAX's, "
    '61440 + job id mod 4096, an array task counted as array id + index).',
  )
  flags.DEFINE_integer(
    'init_timeout_s',
    300,
    "slurm: seconds a run's processes wait for each other at start (JAX's "
    'initialization_timeout).',
  )
  flags.DEFINE_bool(
    'nowait', False, 'slurm: return once queued (print the job id).'
  )
  flags.DEFINE_float('poll_s', 30, 'slurm: seconds between looks at squeue.')


def cli():
  """The command (its console script, and `python -m`)."""
  define_flags()
  command_line.run(main)


if __name__ == '__main__':
  cli()
