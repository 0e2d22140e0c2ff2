"""Batches chosen and augmented on the device, inside the compiled step.

The batch at a step is a pure function of (seed, step): epoch e visits the
training set in the order of a permutation keyed by (seed, e), and each
example's crop and flip are keyed by (seed, step, position in the global
batch). A resumed run therefore sees exactly the batches of an
uninterrupted one, whatever the number of devices.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.errors import ConfigError


class MixedLabels(NamedTuple):
  """The labels of mixed examples (mixup, CutMix): each example is
  `weight` of its own label and 1 - weight of its partner's."""

  labels: jax.Array  # int32 (N,)
  partners: jax.Array  # int32 (N,)
  weight: jax.Array  # float32 (N,), in [0, 1]


PAD = 4  # section 4.2: 4 pixels padded on each side, then a 32x32 crop


def normalise(images, pixel_mean):
  """Images (uint8 or float, NHWC) -> float32 less the training mean: the
  one place the input is normalised, in training, evaluation, prediction
  and BN re-estimation. A per-pixel mean is resized for views larger
  than the training crop (the multi-scale test); a per-channel one
  (1, 1, 3) broadcasts. (model.input_scale then divides, in the model.)"""
  h, w, c = images.shape[-3:]
  pixel_mean = jnp.asarray(pixel_mean, jnp.float32)
  if pixel_mean.ndim == 3 and pixel_mean.shape[:2] not in ((1, 1), (h, w)):
    pixel_mean = jax.image.resize(pixel_mean, (h, w, c), 'bilinear')
  return images.astype(jnp.float32) - pixel_mean


def batch_indices(key, step, num_examples: int, global_batch: int, positions):
  """Dataset indices of `positions` of the global batch at `step`.

  Each epoch drops its last partial batch, so every batch is full.
  """
  steps_per_epoch = num_examples // global_batch
  epoch, within = jnp.divmod(step, steps_per_epoch)
  order = jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)
  return order[within * global_batch + positions]


def crop_and_flip(key, image):
  """A random 32x32 crop of the zero-padded image, flipped half the time.

  Padding after mean subtraction pads with the mean image, as the
  authors' Caffe pipeline did.
  """
  crop_key, flip_key = jax.random.split(key)
  h, w, c = image.shape
  padded = jnp.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
  dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * PAD + 1)
  image = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))
  return jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)


def train_batch(
  images,
  labels,
  pixel_mean,
  key,
  step,
  global_batch: int,
  positions,
  augment: bool = True,
):
  """The (float32, mean-subtracted, augmented) examples at `positions`."""
  order_key, aug_key = jax.random.split(key)
  idx = batch_indices(order_key, step, images.shape[0], global_batch, positions)
  x = normalise(images[idx], pixel_mean)
  if augment:
    step_key = jax.random.fold_in(aug_key, step)
    keys = jax.vmap(lambda p: jax.random.fold_in(step_key, p))(positions)
    x = jax.vmap(crop_and_flip)(keys, x)
  return x, labels[idx]


# AlexNet's lighting noise (Krizhevsky et al. 2012), which the paper's
# ImageNet training uses: eigenvalues and eigenvectors (columns) of the RGB
# covariance of ImageNet pixels, on the 0-255 scale. NumPy, not jnp: a jnp
# array at import would start XLA before jax.distributed.initialize().
PCA_EIGVAL = np.array([55.46, 4.794, 1.148])
PCA_EIGVEC = np.array(
  [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
  ]
)


def pca_lighting(key, image, std: float):
  """Adds eigvec @ (alpha * eigval), alpha ~ N(0, std), to every pixel
  (AlexNet's std, 0.1, is the config's `data.lighting_std`)."""
  alpha = std * jax.random.normal(key, (3,))
  return image + PCA_EIGVEC @ (alpha * PCA_EIGVAL)


def normalise_and_light(
  images, pixel_mean, key, step, positions, lighting_std: float
):
  """uint8 host images -> float32, mean-subtracted, with lighting noise
  keyed by (seed, step, position in the global batch)."""
  x = normalise(images, pixel_mean)
  if lighting_std:
    step_key = jax.random.fold_in(key, step)
    keys = jax.vmap(lambda p: jax.random.fold_in(step_key, p))(positions)
    x = jax.vmap(lambda k, im: pca_lighting(k, im, lighting_std))(keys, x)
  return x


@dataclasses.dataclass(frozen=True)
class Mixing:
  """Mixup and CutMix as the config's data section sets them (alphas of
  0 turn either off; both 0: no mixing, `from_config` gives None)."""

  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0  # the chance that an example (or batch) is mixed
  switch_prob: float = 0.5  # with both on: the chance of CutMix
  # 'batch': one draw (weight, CutMix or mixup, box, mixed or not) for the
  # whole global batch, as the mixup and CutMix authors' code, Bag of
  # Tricks' and timm's default do; 'example': a draw per example.
  per: str = 'batch'

  @classmethod
  def from_config(cls, data_cfg) -> 'Mixing | None':
    d = data_cfg
    if d.mix_lambda not in MIX_LAMBDAS:
      raise ConfigError(
        f'data.mix_lambda={d.mix_lambda!r} is not one of '
        + ', '.join(MIX_LAMBDAS)
      )
    if not (d.mixup_alpha or d.cutmix_alpha) or not d.mix_prob:
      return None
    return cls(
      d.mixup_alpha,
      d.cutmix_alpha,
      d.mix_prob,
      d.mix_switch_prob,
      d.mix_lambda,
    )


MIX_LAMBDAS = ('batch', 'example')  # data.mix_lambda


# The mixing draws' own stream of the run's key, apart from the batch
# order and crops (the number spells 'mix').
MIX_STREAM = 0x6D6978


def cutmix_box(key, height: int, width: int, lam):
  """CutMix's box (Yun et al. 2019) for weight `lam`: sides sqrt(1 - lam)
  of the image's, centred at a uniform pixel and clipped to the image.
  Returns (top, bottom, left, right), bottom and right exclusive."""
  y_key, x_key = jax.random.split(key)
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  cy = jax.random.randint(y_key, (), 0, height)
  cx = jax.random.randint(x_key, (), 0, width)
  top = jnp.clip(cy - cut_h // 2, 0, height)
  bottom = jnp.clip(cy + cut_h // 2, 0, height)
  left = jnp.clip(cx - cut_w // 2, 0, width)
  right = jnp.clip(cx + cut_w // 2, 0, width)
  return top, bottom, left, right


def _mix_one(key, image, partner, mixing: Mixing):
  """One example mixed with its partner: (image, weight of its own label)."""
  apply_key, kind_key, mixup_key, cutmix_key, box_key = jax.random.split(key, 5)
  h, w = image.shape[:2]
  if mixing.mixup_alpha and mixing.cutmix_alpha:
    cutmix = jax.random.bernoulli(kind_key, mixing.switch_prob)
  else:
    cutmix = jnp.asarray(bool(mixing.cutmix_alpha))
  image_out, weight = image, jnp.float32(1.0)
  if mixing.mixup_alpha:
    a = mixing.mixup_alpha
    lam = jax.random.beta(mixup_key, a, a)
    mixed = lam * image + (1.0 - lam) * partner
    image_out, weight = mixed, lam
  if mixing.cutmix_alpha:
    a = mixing.cutmix_alpha
    lam = jax.random.beta(cutmix_key, a, a)
    top, bottom, left, right = cutmix_box(box_key, h, w, lam)
    rows, cols = jnp.arange(h), jnp.arange(w)
    inside = ((rows >= top) & (rows < bottom))[:, None] & (
      (cols >= left) & (cols < right)
    )[None, :]
    cut = jnp.where(inside[..., None], partner, image)
    # The label weight is the area actually kept, after clipping.
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    image_out = jnp.where(cutmix, cut, image_out)
    weight = jnp.where(cutmix, kept.astype(jnp.float32), weight)
  applied = jax.random.bernoulli(apply_key, mixing.prob)
  return (
    jnp.where(applied, image_out, image),
    jnp.where(applied, weight, 1.0).astype(jnp.float32),
  )


def mix(key, step, positions, images, labels, mixing: Mixing, axis_name=None):
  """Mixup / CutMix of a (per-device) batch of float images: the example
  at position p of the global batch of G is mixed with the one at
  G - 1 - p (with `axis_name`, fetched from the device that holds it), so
  the pairs, like the draws, keyed by (seed, step) and with
  mixing.per='example' by the position too, are those of any other device
  count, and a resumed run mixes exactly as an uninterrupted one.
  Returns (images, MixedLabels)."""
  step_key = jax.random.fold_in(jax.random.fold_in(key, MIX_STREAM), step)
  if mixing.per == 'batch':  # the same draw at every position
    positions = jnp.zeros_like(positions)
  keys = jax.vmap(lambda p: jax.random.fold_in(step_key, p))(positions)
  partners, partner_labels = images[::-1], labels[::-1]
  if axis_name is not None:  # device d pairs with device n - 1 - d
    n = jax.lax.axis_size(axis_name)
    mirror = [(d, n - 1 - d) for d in range(n)]
    partners, partner_labels = jax.lax.ppermute(
      (partners, partner_labels), axis_name, mirror
    )
  mixed, weight = jax.vmap(lambda k, x, xp: _mix_one(k, x, xp, mixing))(
    keys, images, partners
  )
  return mixed, MixedLabels(labels, partner_labels, weight)
