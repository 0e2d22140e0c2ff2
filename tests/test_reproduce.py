"""resnet_jax.reproduce: an experiment's runs, skipped when
finished, the ledger over seeds, and the dry run's commands."""

import csv
import dataclasses
import json

import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.paper import experiments
from resnet_jax.paper import reproduce
from tests.helpers import SAMPLE
from tests.helpers import run_cli

SAMPLE_SETS = [
  f'data.local_dir={SAMPLE}',
  'data.validation_size=200',
  'data.eval_on=validation',
  'train.batch_size=16',
]
TINY = experiments.Experiment(
  'two tiny nets',
  (
    experiments.PlannedRun('plain8', 'configs/cifar10.py:plain8'),
    experiments.PlannedRun('resnet8', 'configs/cifar10.py:resnet8', 9.99),
  ),
)


def test_durations_scale_with_the_recipe():
  config = reproduce.run_config(
    experiments.EXPERIMENTS['cifar_table6'].runs[-1], 3, SAMPLE_SETS, 0.01
  )
  assert config.train.length == 640 and config.train.seed == 3
  assert tuple(config.optim.lr_boundaries) == (320, 480)
  assert config.optim.warmup_steps == 4  # ResNet-110's 400, scaled
  assert config.train.log_every == 1 and config.train.eval_every == 40
  assert config.data.validation_size == 200  # --set applied
  with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
    reproduce.run_config(TINY.runs[0], 0, ['train.nope=1'], 1.0)
  with pytest.raises(ConfigError, match='must be in'):
    reproduce.run_config(TINY.runs[0], 0, [], 0.0)


def test_runs_seeds_skips_finished_and_writes_the_ledger(tmp_path):
  sets = [*SAMPLE_SETS, 'train.length=6', 'train.eval_every=6']
  resnet_only = experiments.Experiment('resnet8', TINY.runs[1:])
  plan = reproduce.plan_runs(resnet_only, str(tmp_path), 2, sets, 1.0)
  assert len(reproduce.run_plan(plan)) == 2
  assert reproduce.run_plan(plan) == []  # finished runs are skipped
  results = {
    ('resnet8', seed): json.loads(
      (tmp_path / 'resnet8' / f'seed{seed}' / 'result.json').read_text()
    )
    for seed in (0, 1)
  }
  rows = reproduce.ledger(TINY, str(tmp_path), seeds=2)
  assert [r['model'] for r in rows] == ['plain8', 'resnet8']
  resnet = rows[1]
  errors = [results['resnet8', s]['error'] for s in (0, 1)]
  assert resnet['seeds'] == 2 and resnet['steps'] == 6
  assert resnet['error_mean'] == pytest.approx(sum(errors) / 2)
  assert resnet['paper_error'] == 9.99 and resnet['shortcut'] == 'A'
  plain = rows[0]  # not trained: listed, without results
  assert plain['shortcut'] == 'none (plain)' and plain['seeds'] == 0
  assert plain['error_mean'] is None
  assert resnet['params'] == 75_290  # ResNet-8: 6n+2 with n = 1
  reproduce.write_ledger(rows, str(tmp_path))
  with open(tmp_path / 'ledger.csv') as f:
    assert [r['model'] for r in csv.DictReader(f)] == ['plain8', 'resnet8']
  table = (tmp_path / 'ledger.md').read_text()
  assert '| resnet8 | A | 75,290 | 9.99 |' in table and ' +- ' in table
  # The plots, and Figure 7's responses of the finished run (seed 0).
  with_plots = dataclasses.replace(TINY, plots=('curves', 'responses'))
  reproduce.finish(with_plots, str(tmp_path), seeds=2)
  for plot in ('curves.png', 'responses.png'):
    assert (tmp_path / plot).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  found = json.loads(
    (tmp_path / 'resnet8' / 'seed0' / 'responses.json').read_text()
  )
  assert found['step'] == 6 and found['split'] == 'validation'
  assert len(found['std']) == 6 and found['residual']  # 3 blocks x 2 convs
  assert not (tmp_path / 'plain8').exists()  # never trained: no responses


def test_dry_run_prints_one_command_per_run_and_seed():
  result = run_cli(
    '-m',
    'resnet_jax.reproduce',
    'cifar_figure6',
    '--workdir=/tmp/never_written',
    '--seeds=2',
    '--steps_scale=0.01',
    *[f'--set={s}' for s in SAMPLE_SETS],
    '--dry_run',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 2 * 9  # plain 20-56 and ResNet 20-110, two seeds
  assert lines[0].startswith(
    'python -m resnet_jax.train --config=configs/cifar10.py:plain20'
  )
  assert '--config.train.length=640' in lines[0]
  assert '--config.train.seed=1' in lines[1]
  assert lines[1].endswith('--workdir=/tmp/never_written/plain20/seed1')


def test_unknown_experiment_is_one_error():
  result = run_cli('-m', 'resnet_jax.reproduce', 'table99', '--workdir=x')
  assert result.returncode == 2
  assert 'name one experiment: cifar_table6' in result.stderr


def test_runs_flag_selects_runs_and_rejects_unknown_names():
  figure6 = experiments.EXPERIMENTS['cifar_figure6']
  picked = reproduce.select(figure6, ['resnet56', 'plain20'])
  assert [r.name for r in picked.runs] == ['plain20', 'resnet56']
  assert reproduce.select(figure6, []) is figure6
  with pytest.raises(ConfigError, match='plain21 not in this experiment'):
    reproduce.select(figure6, ['plain21'])


def test_a_result_belongs_to_its_config(tmp_path):
  """A rerun with another config (another --steps_scale, --set) refuses
  in one line naming the run and the first key that differs; --retrain
  moves the old run aside and trains afresh; the same config goes on."""
  sets = [*SAMPLE_SETS, 'train.length=2', 'train.eval_every=2']
  resnet_only = experiments.Experiment('resnet8', TINY.runs[1:])
  plan = reproduce.plan_runs(resnet_only, str(tmp_path), 1, sets, 1.0)
  longer = reproduce.plan_runs(
    resnet_only, str(tmp_path), 1, [*sets, 'train.length=3'], 1.0
  )
  workdir = tmp_path / 'resnet8' / 'seed0'
  # Planned, never started nor submitted: another plan may take it.
  assert reproduce.check_planned(longer) == []
  assert reproduce.check_planned(plan) == []
  planned = json.loads((workdir / 'planned.json').read_text())
  assert planned['config']['train.length'] == 2
  with pytest.raises(ConfigError, match=r'train.length: 2 there, 3 now'):
    reproduce.check_planned(longer, submitted={str(workdir)})
  reproduce.run_plan(plan)
  result = json.loads((workdir / 'result.json').read_text())
  assert result['fingerprint'] == planned['fingerprint']
  assert reproduce.check_planned(plan) == []  # the same command: fine
  with pytest.raises(
    ConfigError,
    match=r'resnet8 seed 0: .*/resnet8/seed0 holds a run of another config '
    r'\(train.length: 2 there, 3 now\); run the same command as before, use '
    'another --workdir, or add --retrain',
  ):
    reproduce.check_planned(longer)
  assert reproduce.check_planned(longer, retrain=True) == [str(workdir)]
  moved = tmp_path / 'resnet8' / 'seed0.replaced'
  assert json.loads((moved / 'result.json').read_text()) == result
  assert not (workdir / 'result.json').exists()
  again = json.loads((workdir / 'planned.json').read_text())
  assert again['config']['train.length'] == 3
  assert again['fingerprint'] != planned['fingerprint']
  # A folder from before planned.json: its run's own config.json.
  (moved / 'planned.json').unlink()
  old = plan[0]._replace(workdir=str(moved))
  assert reproduce.check_planned([old]) == []
  shorter = longer[0]._replace(workdir=str(moved))
  (moved / 'planned.json').unlink()
  with pytest.raises(ConfigError, match=r'train.length: 2 there, 3 now'):
    reproduce.check_planned([shorter])
  with pytest.raises(ConfigError, match='--retrain: resnet8 seed 0 is still '
                     'queued'):
    reproduce.check_planned([shorter], True, queued={str(moved)})
