"""What a workdir holds, and where: the one module that spells its paths.

WORKDIR/config.json         the run's config (written whole, once the
                            run can go on)
WORKDIR/classes.json        the class names, where the data has them
WORKDIR/train_files.txt.gz  an image folder's training files, as listed
                            when the run started (read again on resume)
WORKDIR/devices.json        the processes and devices the run last
                            trained on (a resume on others says so)
WORKDIR/metrics.jsonl       one JSON object per training or eval event
WORKDIR/tensorboard/        the same scalars as TensorBoard events
WORKDIR/mlflow_run.json     the MLflow run that a run with train.mlflow
                            logs to (continued on resume)
WORKDIR/checkpoints/STEP/   Orbax checkpoints of the TrainState
WORKDIR/lock                held by the run that trains there (lock.py)
ROOT/reproduce.lock         held by the reproduce command that submits to,
                            trains or waits on an experiment's folder
WORKDIR/result.json         a finished run of `reproduce`; responses.json
                            its Figure 7 statistics; experiment.json (in
                            an experiment's folder) the command
WORKDIR/planned.json        the config `reproduce` planned the run with
                            (and its fingerprint): a rerun with another
                            is refused
WORKDIR/slices.json         each slice of a run of `reproduce` (a start
                            and its requeues): start, end, how it ended
WORKDIR/failure.json        a run of `reproduce` that failed: its one-line
                            error and log (removed when it starts again)
WORKDIR/log.txt             the output of a run that a launcher started
                            in a process of its own (log.rankR.txt: the
                            other processes of a multi-node run)
"""

import os

CONFIG = 'config.json'
CLASSES = 'classes.json'
TRAIN_FILES = 'train_files.txt.gz'
METRICS = 'metrics.jsonl'
DEVICES = 'devices.json'
TENSORBOARD = 'tensorboard'
MLFLOW_RUN = 'mlflow_run.json'
CHECKPOINTS = 'checkpoints'
LOCK = 'lock'
SWEEP_LOCK = 'reproduce.lock'  # ROOT/: the command that holds a sweep
RESULT = 'result.json'
RESPONSES = 'responses.json'
EXPERIMENT = 'experiment.json'
FAILURE = 'failure.json'
SLICES = 'slices.json'
PLANNED = 'planned.json'
LOG = 'log.txt'


def path(workdir: str, name: str, *more: str) -> str:
  """WORKDIR/NAME[/MORE...], e.g. path(w, CHECKPOINTS, '40')."""
  return os.path.join(workdir, name, *more)
