"""Knowledge distillation ("Bag of Tricks" section 5.3; Hinton et al.
2015): a teacher, the weights of another workdir (a run of ours, or
torchvision's imported by resnet_jax.convert), gives its logits on each
training batch, in the same compiled step as the student's, and the
student learns from them and the labels (losses.distillation_loss).

The teacher sees exactly the student's (augmented, mixed) images, in its
own normalisation: the student's mean is added back and the teacher's
subtracted; its model divides by its own input_scale. It runs in
inference mode (its BN statistics, no dropout of anything), and no
gradient reaches it.
"""

import dataclasses
import os
from typing import Any

import jax

from resnet_jax import parallel
from resnet_jax.data import augment
from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from resnet_jax.run import layout
from resnet_jax.run import saved_config
from resnet_jax.train import saved_state
from resnet_jax.train import train_state


@dataclasses.dataclass(frozen=True)
class Distillation:
  """What the compiled step needs to know of the teacher besides its
  weights (which it takes as an argument: see `weights`)."""

  model: Any  # the teacher's network
  temperature: float
  hard_weight: float

  def logits(self, teacher, x, student_mean):
    """The teacher's logits of the student's normalised batch `x`."""
    images = x + student_mean  # the pixels, mixed and augmented
    variables = {k: teacher[k] for k in ('params', 'batch_stats')}
    return self.model.apply(
      variables, augment.normalise(images, teacher['pixel_mean']), train=False
    )


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A checked teacher: its workdir, config and network."""

  workdir: str
  config: Any
  model: Any
  weights: str  # 'raw' or 'ema'

  def distillation(self, optim_cfg) -> Distillation:
    return Distillation(
      self.model, optim_cfg.distill_temperature, optim_cfg.distill_hard_weight
    )

  def load(self, mesh):
    """{'params', 'batch_stats', 'pixel_mean'} of its newest checkpoint,
    replicated on `mesh` (each process reads the checkpoint whole)."""
    local = parallel.make_mesh(jax.local_devices())
    _, _, state = saved_state.load(
      self.workdir, self.config, local, self.weights
    )
    return parallel.replicate(
      mesh,
      dict(
        params=state.params,
        batch_stats=state.batch_stats,
        pixel_mean=state.pixel_mean,
      ),
    )


def check(config, workdir: str | None = None) -> Teacher | None:
  """The config's teacher (None without train.teacher), checked against
  the student before anything is read or compiled: a run's workdir with
  a checkpoint, the same classes, weights it has, a mean that fits the
  student's crops. Raises ConfigError."""
  t = config.train
  if t.teacher is None:
    return None
  if not t.teacher:  # '': the config distils, and says so
    raise ConfigError(
      'this config distils knowledge: set train.teacher=DIR, the workdir '
      "of a trained teacher (e.g. bag_of_tricks.py's teacher row)"
    )
  path = t.teacher
  if workdir and os.path.realpath(path) == os.path.realpath(workdir):
    raise ConfigError(
      f"train.teacher={path} is this run's own workdir: a teacher is "
      'another, trained run'
    )
  try:
    teacher_cfg = saved_config.read(path)
  except ConfigError as e:
    raise ConfigError(f'train.teacher: {e}') from e
  checkpoints = layout.path(path, layout.CHECKPOINTS)
  if not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
    raise ConfigError(
      f'train.teacher: no checkpoint in {checkpoints}: train the teacher '
      'first (or import one with resnet_jax.convert --torch_checkpoint)'
    )
  classes = teacher_cfg.data.num_classes
  if classes != config.data.num_classes:
    raise ConfigError(
      f'train.teacher={path} predicts {classes} classes; this run has '
      f'data.num_classes={config.data.num_classes}'
    )
  if t.teacher_weights not in train_state.WEIGHTS:
    raise ConfigError(
      f'train.teacher_weights={t.teacher_weights!r} is not one of '
      + ', '.join(train_state.WEIGHTS)
    )
  if t.teacher_weights == 'ema' and not saved_config.keeps_ema(teacher_cfg):
    raise ConfigError(
      f'train.teacher_weights=ema, but {path} keeps no moving average of '
      'its weights: use train.teacher_weights=raw'
    )
  _, mean_shape = saved_config.image_shapes(teacher_cfg)
  size = config.data.image_size
  if mean_shape[:2] not in ((1, 1), (size, size)):
    raise ConfigError(
      f'train.teacher={path} subtracts a per-pixel mean of '
      f'{mean_shape[0]}x{mean_shape[1]} images; this run trains on '
      f'{size}x{size} crops'
    )
  model = resnet.build(teacher_cfg.model, classes)
  return Teacher(path, teacher_cfg, model, t.teacher_weights)
