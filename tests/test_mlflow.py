"""MLflow as a sink of the metrics (train.mlflow, run/mlflow_sink.py),
read back with MLflow's own client from a local tracking folder."""

import json
import sys

import pytest

from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.errors import WriteFailed
from resnet_jax.train import loop
from tests.helpers import few_devices
from tests.helpers import read_metrics
from tests.helpers import tiny_config

mlflow = pytest.importorskip('mlflow')


def test_a_run_and_its_resume_log_the_config_and_every_metric(
  tmp_path, monkeypatch
):
  """Two steps, then the same workdir resumed to four: one MLflow run
  whose params are config.json's keys and values and whose metrics are
  metrics.jsonl's, step for step and value for value."""
  monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')  # a local folder
  monkeypatch.setenv('MLFLOW_EXPERIMENT_NAME', 'figure6')
  uri = (tmp_path / 'mlruns').as_uri()
  workdir = tmp_path / 'run'
  for length in (2, 4):
    config = tiny_config(
      length=length, eval_every=2, checkpoint_every=2, mlflow=uri
    )
    loop.train_and_evaluate(config, str(workdir), few_devices())

  client = mlflow.tracking.MlflowClient(tracking_uri=uri)
  experiment = client.get_experiment_by_name('figure6')
  (run,) = client.search_runs([experiment.experiment_id])
  record = json.loads((workdir / 'mlflow_run.json').read_text())
  assert record == dict(tracking_uri=uri, run_id=run.info.run_id)
  assert run.info.status == 'FINISHED'
  assert run.info.run_name == str(workdir)

  saved = keys.flatten(json.loads((workdir / 'config.json').read_text()))
  assert run.data.params.keys() == saved.keys()
  assert run.data.params['model.depth'] == '8'
  assert run.data.params['train.mlflow'] == repr(uri)
  assert run.data.params['optim.lr'] == str(saved['optim.lr'])

  for kind in ('train', 'validation'):
    records = read_metrics(workdir, kind)
    assert [r['step'] for r in records] == (
      [1, 2, 3, 4] if kind == 'train' else [2, 4]
    )
    for name in set(records[0]) - {'step', 'kind', 'time'}:
      history = client.get_metric_history(run.info.run_id, f'{kind}/{name}')
      logged = sorted((m.step, m.value) for m in history)
      assert logged == [(r['step'], r[name]) for r in records], name


def test_without_the_client_a_run_naming_mlflow_is_refused_in_one_line(
  tmp_path, monkeypatch
):
  monkeypatch.setitem(sys.modules, 'mlflow', None)  # import mlflow fails
  config = tiny_config(mlflow=(tmp_path / 'mlruns').as_uri())
  with pytest.raises(ConfigError, match=r"pip install 'mlflow-skinny"):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()  # refused before anything


def test_a_tracker_that_does_not_answer_stops_the_run_in_one_line(
  tmp_path, monkeypatch
):
  """Nothing listens on port 9: errors.WriteFailed (exit 74) naming the
  tracker and what was being done, as for a full disk."""
  monkeypatch.setenv('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '0')
  monkeypatch.setenv('MLFLOW_HTTP_REQUEST_TIMEOUT', '5')
  config = tiny_config(mlflow='http://127.0.0.1:9')
  with pytest.raises(WriteFailed) as stopped:
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert str(stopped.value).startswith(
    'error: starting the run (train.mlflow): could not write MLflow at '
    'http://127.0.0.1:9 (Connection refused)'
  ), str(stopped.value)
  assert '\n' not in str(stopped.value)
  assert stopped.value.exit_code == 74
