"""MLflow as a sink of the training metrics (train.mlflow=TRACKING_URI):
the run's config as params, each event's scalars as KIND/NAME metrics at
its step, the run ended FINISHED or KILLED. A resumed workdir continues
its MLflow run (its id in WORKDIR/mlflow_run.json).

MLflow is an optional extra (pip install 'resnet-jax[mlflow]': the
mlflow-skinny client); only a run that names a tracking URI imports it.
"""

import contextlib
import math
import os

from resnet_jax.config import keys
from resnet_jax.errors import ConfigError
from resnet_jax.errors import WriteFailed
from resnet_jax.errors import writing
from resnet_jax.run import files
from resnet_jax.run import layout

INSTALL = "pip install 'mlflow-skinny>=3.18,<4'"
EXPERIMENT = 'resnet_jax'  # unless MLFLOW_EXPERIMENT_NAME says another
BATCH = 1000  # MLflow's limit of metrics in one log_batch call


def _mlflow():
  try:
    import mlflow
    import mlflow.entities
    import mlflow.exceptions
    import mlflow.tracking
  except ImportError as e:
    raise ConfigError(
      f'train.mlflow needs the MLflow client (not installed here): {INSTALL}'
    ) from e
  return mlflow


def check(config) -> None:
  """Before anything is built: a run that names a tracking URI can log
  to it (the client is installed)."""
  if config.train.get('mlflow'):
    _mlflow()


class MlflowSink:
  """The metrics of a run in the workdir, in an MLflow run of experiment
  MLFLOW_EXPERIMENT_NAME (default 'resnet_jax') at `tracking_uri`."""

  def __init__(self, tracking_uri: str, workdir: str, config):
    mlflow = self._mlflow = _mlflow()
    self._client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
    self._where = f'MLflow at {tracking_uri}'
    self._record = layout.path(workdir, layout.MLFLOW_RUN)
    self._run_id = None
    saved = files.read_json(self._record)
    with self._failing('starting the run'):
      if saved and saved.get('tracking_uri') == tracking_uri:
        self._run_id = saved['run_id']  # a resumed run continues it
        self._client.update_run(self._run_id, status='RUNNING')
        return
      name = os.environ.get('MLFLOW_EXPERIMENT_NAME', EXPERIMENT)
      experiment = self._client.get_experiment_by_name(name)
      experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else self._client.create_experiment(name)
      )
      run = self._client.create_run(
        experiment_id, run_name=os.path.abspath(workdir)
      )
      self._run_id = run.info.run_id
      params = [
        mlflow.entities.Param(
          key, repr(value) if isinstance(value, str) else str(value)
        )
        for key, value in sorted(keys.flatten(config.to_dict()).items())
      ]
      for i in range(0, len(params), 100):  # MLflow's limit of params
        self._client.log_batch(self._run_id, params=params[i : i + 100])
    with writing(self._record, 'recording the MLflow run'):
      files.write_json(
        self._record, dict(tracking_uri=tracking_uri, run_id=self._run_id)
      )

  @contextlib.contextmanager
  def _failing(self, what):
    """MLflow's errors (a server that answers no, a full disk under a
    local store) end the run as errors.WriteFailed, in one line."""
    try:
      yield
    except (OSError, self._mlflow.exceptions.MlflowException) as e:
      raise WriteFailed(self._where, f'{what} (train.mlflow)', e) from e

  def write(self, step, kind, wall_time, scalars):
    milliseconds = int(wall_time * 1000)
    metrics = [
      self._mlflow.entities.Metric(f'{kind}/{name}', value, milliseconds, step)
      for name, value in scalars.items()
      if isinstance(value, (int, float)) and math.isfinite(value)
    ]
    with self._failing('logging metrics'):
      for i in range(0, len(metrics), BATCH):
        self._client.log_batch(self._run_id, metrics=metrics[i : i + BATCH])

  def close(self, ended: bool = True):
    """Ends the MLflow run FINISHED, or KILLED where the training stopped
    early (a resume sets it RUNNING again)."""
    if self._run_id is None:
      return
    run_id, self._run_id = self._run_id, None
    with self._failing('ending the run'):
      self._client.set_terminated(
        run_id, status='FINISHED' if ended else 'KILLED'
      )
