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
other resumes from its checkpoints. --steps_scale shrinks every duration
(length, learning-rate boundaries, warm-up, log/eval/checkpoint intervals)
for a quick look. Then WORKDIR/ledger.csv and ledger.md list each run:
parameters, the paper's error, ours (mean +- std over seeds), steps,
wall-clock, device and commit; WORKDIR/curves.png plots the training and
test error curves (Figure 6's style) and, for cifar_figure6/7,
WORKDIR/responses.png the std of each layer's response (Figure 7; each
run's seed 0, saved in its responses.json). WORKDIR/experiment.json
records the command; `python -m resnet_jax.results` turns such folders
into the README's results section. `--runs=a,b` trains only those runs
of the experiment; `--dry_run` prints the train.py commands.
"""

import json
import os
import shlex

from absl import flags

from resnet_jax import errors
from resnet_jax.errors import ConfigError
from resnet_jax.paper import experiments
from resnet_jax.paper.reproduce import command
from resnet_jax.paper.reproduce import finish
from resnet_jax.paper.reproduce import markdown
from resnet_jax.paper.reproduce import plan_runs
from resnet_jax.paper.reproduce import run_plan
from resnet_jax.paper.reproduce import select
from resnet_jax.run import layout

FLAGS = flags.FLAGS


def reproduce_command(name: str, root: str) -> str:
  """This command line, as the flags have it (for experiment.json)."""
  args = [name, f'--workdir={root}', f'--seeds={FLAGS.seeds}']
  if FLAGS.steps_scale != 1:
    args.append(f'--steps_scale={FLAGS.steps_scale:g}')
  args += [f'--set={item}' for item in FLAGS.set]
  if FLAGS.runs:
    args.append(f'--runs={",".join(FLAGS.runs)}')
  return ' '.join(['python -m resnet_jax.reproduce', *map(shlex.quote, args)])


def main(argv):
  if len(argv) != 2 or argv[1] not in experiments.EXPERIMENTS:
    raise ConfigError(
      'name one experiment: ' + ', '.join(experiments.EXPERIMENTS)
    )
  if not FLAGS.workdir:
    raise ConfigError('--workdir=DIR is required')
  if FLAGS.seeds < 1:
    raise ConfigError(f'--seeds={FLAGS.seeds} must be at least 1')
  experiment = select(experiments.EXPERIMENTS[argv[1]], FLAGS.runs)
  root = FLAGS.workdir
  plan = plan_runs(experiment, root, FLAGS.seeds, FLAGS.set, FLAGS.steps_scale)
  if FLAGS.dry_run:
    for run, _, config, workdir in plan:
      print(command(run, config, workdir))
    return
  os.makedirs(root, exist_ok=True)
  with open(layout.path(root, layout.EXPERIMENT), 'w') as f:
    json.dump(
      dict(
        experiment=argv[1],
        description=experiment.description,
        command=reproduce_command(argv[1], root),
        runs=[run.name for run in experiment.runs],
        seeds=FLAGS.seeds,
        steps_scale=FLAGS.steps_scale,
      ),
      f,
      indent=1,
    )
  run_plan(plan)
  print(markdown(finish(experiment, root, FLAGS.seeds)))


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


def cli():
  """The command (its console script, and `python -m`)."""
  define_flags()
  errors.run(main)


if __name__ == '__main__':
  cli()
