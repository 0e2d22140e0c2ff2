"""Deep residual networks in JAX/Flax, faithful to He et al. 2015.

The public API, all of it here; everything else is internal:

  network(name, ...)             a network of the paper as a Flax module
  load_config(name)              a built-in config ('quickstart',
                                 'cifar10:resnet110', ...) or a config
                                 file's path, as a ConfigDict
  train_and_evaluate(cfg, dir)   trains (or resumes) a run in a workdir
  load_run(dir)                  a finished run: network, variables, mean
  Run.predict(images)            class probabilities for a batch of images
  predict_files(dir, files)      top-5 predictions for image files
  normalise(images, mean)        the input normalisation every path uses

(The names avoid the package's folders and commands: `resnet_jax.train`
is the training folder, `resnet_jax.predict` the predict command.)

The commands (resnet-jax-train, -evaluate, -predict, -reproduce, ...) are
the same as `python -m resnet_jax.<command>`.
"""

import dataclasses
from typing import Any

__version__ = '0.1.0'
__all__ = [
  'Run',
  'load_config',
  'load_run',
  'network',
  'normalise',
  'predict_files',
  'train_and_evaluate',
]


def network(
  name: str,
  *,
  shortcut: str | None = None,
  stride: str | None = None,
  block: str | None = None,
  stem: str | None = None,
  dtype: str = 'float32',
  num_classes: int | None = None,
  family: str | None = None,
):
  """The paper's network `name` ('resnet20', 'plain56', 'resnet50',
  'resnext50_32x4d', ...) as a Flax module, with the paper's defaults
  (option A on CIFAR nets and ResNet-18/34, B on the bottleneck nets; v1
  strides) unless `shortcut` ('A'-'D'), `stride` ('v1', 'v1.5'), `block`
  ('standard', 'preact'), `stem` ('standard', 'deep': ResNet-C) or `dtype`
  ('float32', 'bfloat16') say otherwise: ResNet-50-D is
  network('resnet50', stride='v1.5', stem='deep', shortcut='D').
  `family` is 'imagenet' for depths 18, 34, 50, 101, 152 and 'cifar'
  (6n+2) otherwise; `num_classes` defaults to 1000 or 10."""
  from resnet_jax.config import arguments
  from resnet_jax.model import resnet

  options = dict(
    shortcut=shortcut, stride=stride, block=block, stem=stem, dtype=dtype
  )
  arg = ','.join(
    [name] + [f'{k}={v}' for k, v in options.items() if v is not None]
  )
  if family is None:
    depth = arguments.parse(arg)[0]['depth']
    family = 'imagenet' if depth in resnet.IMAGENET_STAGES else 'cifar'
  model_cfg = arguments.model_config(arg, family=family)
  classes = num_classes or (1000 if family == 'imagenet' else 10)
  return resnet.build(model_cfg, classes)


def load_config(name: str):
  """A config by built-in name or path, with its argument after a colon:
  'quickstart', 'cifar10:resnet110,shortcut=B', 'configs/imagenet.py'."""
  from resnet_jax.config import arguments

  return arguments.load(name)


def train_and_evaluate(config, workdir: str, devices=None) -> dict:
  """Trains `config` in `workdir` (resuming from its checkpoints) and
  returns the final metrics; the same call as the train command."""
  from resnet_jax.train import loop

  return loop.train_and_evaluate(config, workdir, devices)


def normalise(images, pixel_mean):
  """NHWC images (uint8 or float) minus a run's training mean, float32."""
  from resnet_jax.data import augment

  return augment.normalise(images, pixel_mean)


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run, for inference in your own code: `model.apply(
  variables, normalise(images, pixel_mean))` gives its logits."""

  config: Any
  model: Any
  variables: dict
  pixel_mean: Any
  classes: list | None

  def predict(self, images, batch_size: int = 256):
    """Class probabilities (N, classes) for NHWC images prepared at the
    run's size (uint8 pixels, as training read them)."""
    import jax
    import numpy as np

    apply = jax.jit(
      lambda x: jax.nn.softmax(
        self.model.apply(self.variables, normalise(x, self.pixel_mean))
      )
    )
    images = np.asarray(images)
    return np.concatenate(
      [
        np.asarray(apply(images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
      ]
    )


def load_run(workdir: str, weights: str = 'raw') -> Run:
  """The network, variables and training mean of the newest checkpoint of
  `workdir` (a run trained here, imported or fine-tuned), read-only; its
  raw weights or 'ema', their moving average (train.ema_decay)."""
  from resnet_jax.eval import predict as prediction
  from resnet_jax.train import saved_state

  config, model, state = saved_state.load(workdir, weights=weights)
  return Run(
    config=config,
    model=model,
    variables={'params': state.params, 'batch_stats': state.batch_stats},
    pixel_mean=state.pixel_mean,
    classes=prediction.class_names(config, workdir),
  )


def predict_files(
  workdir: str, files, batch_size: int = 64, weights: str = 'raw'
) -> list[dict]:
  """Top-5 predictions, one dict per image file (or logits per image of
  a prepared .npy batch), as the predict command prints them."""
  from resnet_jax.eval import predict as prediction

  return prediction.predict(workdir, files, batch_size, weights)
