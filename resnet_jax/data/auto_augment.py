"""RandAugment, TrivialAugment and random erasing of image sets' training
crops, on the host in tf.data (data.auto_augment, data.random_erasing).

Written in TensorFlow's own image ops (no library fits the stack: Keras'
RandAugment draws one operation for a whole batch from a stateful
generator and computes every operation to select one; TF Addons is
retired). Every draw is stateless, from the example's seed, so a resumed
run augments exactly as an uninterrupted one, and each example runs only
the operations drawn for it (tf.switch_case).

The operations and their strengths follow the papers as torchvision
implements them: 14 operations, strengths in 31 bins (0-30).
- 'rand' (RandAugment, Cubuk et al. 2020): data.rand_augment_ops
  operations per image, each drawn uniformly, all at strength
  data.rand_augment_magnitude, in RandAugment's ranges.
- 'trivial' (TrivialAugment wide, Mueller & Hutter 2021): one operation
  per image at a uniformly drawn strength, in the wider ranges.
Random erasing (Zhong et al. 2020) then replaces, with probability
data.random_erasing, a box of 2-33% of the crop (aspect 0.3-3.3) with
uniform random pixels.
"""

import math

from resnet_jax.data import tf_cpu

tf = tf_cpu.tensorflow()

BINS = 31  # strengths 0..30
# Pixels that geometric operations bring in from outside the image: a
# mid grey, which the mean subtraction takes close to 0.
FILL = 128.0
OPS = (
  'identity',
  'shear_x',
  'shear_y',
  'translate_x',
  'translate_y',
  'rotate',
  'brightness',
  'color',
  'contrast',
  'sharpness',
  'posterize',
  'solarize',
  'autocontrast',
  'equalize',
)
# Strength at bin 30 of the operations whose strength is a signed amount:
# shears (a factor), translations (pixels; RandAugment's a fraction of the
# side, 150/331), rotations (degrees), the enhancements (a factor - 1).
SIGNED = {
  'rand': dict(
    shear_x=0.3,
    shear_y=0.3,
    translate_x=150 / 331,
    translate_y=150 / 331,
    rotate=30.0,
    brightness=0.9,
    color=0.9,
    contrast=0.9,
    sharpness=0.9,
  ),
  'trivial': dict(
    shear_x=0.99,
    shear_y=0.99,
    translate_x=32.0,
    translate_y=32.0,
    rotate=135.0,
    brightness=0.99,
    color=0.99,
    contrast=0.99,
    sharpness=0.99,
  ),
}
# Posterize keeps 8 - bin / (30 / LOST) bits: down to 4 (rand) or 2.
POSTERIZE_LOST = {'rand': 4, 'trivial': 6}


def for_config(data_cfg):
  """fn(uint8 image, seed) -> uint8 image for the config's host
  augmentations, or None when there are none (data.auto_augment is
  checked with the other data keys, in data/inputs.py)."""
  kind, erasing = data_cfg.auto_augment, data_cfg.random_erasing
  if kind is None and not erasing:
    return None
  ops, magnitude = data_cfg.rand_augment_ops, data_cfg.rand_augment_magnitude

  def augment(image, seed):
    op_seed, erase_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2)
    )
    if kind == 'rand':
      image = rand_augment(image, op_seed, ops, magnitude)
    elif kind == 'trivial':
      image = trivial_augment(image, op_seed)
    if erasing:
      image = random_erasing(image, erase_seed, erasing)
    return image

  return augment


def rand_augment(image, seed, num_ops: int, magnitude: int):
  """`num_ops` operations, each drawn uniformly, at strength `magnitude`."""
  seeds = tf.random.experimental.stateless_split(seed, num_ops)
  for i in range(num_ops):
    op_seed, sign_seed = tf.unstack(
      tf.random.experimental.stateless_split(seeds[i], 2)
    )
    op = tf.random.stateless_uniform([], op_seed, 0, len(OPS), tf.int32)
    image = apply(image, op, tf.constant(magnitude), sign_seed, 'rand')
  return image


def trivial_augment(image, seed):
  """One operation, drawn uniformly, at a uniformly drawn strength."""
  op_seed, bin_seed, sign_seed = tf.unstack(
    tf.random.experimental.stateless_split(seed, 3)
  )
  op = tf.random.stateless_uniform([], op_seed, 0, len(OPS), tf.int32)
  strength = tf.random.stateless_uniform([], bin_seed, 0, BINS, tf.int32)
  return apply(image, op, strength, sign_seed, 'trivial')


def apply(image, op, strength, sign_seed, kind: str):
  """Operation number `op` of OPS at bin `strength` (0-30), its signed
  amounts negated half the time: a uint8 image of the same shape."""
  op = tf.convert_to_tensor(op, tf.int32)
  strength = tf.convert_to_tensor(strength, tf.int32)
  fraction = tf.cast(strength, tf.float32) / (BINS - 1)
  negate = tf.random.stateless_uniform([], sign_seed) < 0.5
  side = tf.cast(tf.shape(image)[:2], tf.float32)

  def amount(name):
    value = SIGNED[kind][name] * fraction
    if name.startswith('translate') and kind == 'rand':  # of the side
      value *= side[1] if name == 'translate_x' else side[0]
    return tf.where(negate, -value, value)

  lost = POSTERIZE_LOST[kind]
  bits = 8 - tf.cast(
    tf.round(tf.cast(strength, tf.float32) * lost / 30), tf.int32
  )
  threshold = 255.0 * (1.0 - fraction)
  branches = {
    'identity': lambda: image,
    'shear_x': lambda: shear(image, amount('shear_x'), 0.0),
    'shear_y': lambda: shear(image, 0.0, amount('shear_y')),
    'translate_x': lambda: translate(image, amount('translate_x'), 0.0),
    'translate_y': lambda: translate(image, 0.0, amount('translate_y')),
    'rotate': lambda: rotate(image, amount('rotate')),
    'brightness': lambda: blend(
      tf.zeros_like(_float(image)), image, 1 + amount('brightness')
    ),
    'color': lambda: blend(grey(image), image, 1 + amount('color')),
    'contrast': lambda: blend(
      tf.fill(tf.shape(image), tf.reduce_mean(grey(image))),
      image,
      1 + amount('contrast'),
    ),
    'sharpness': lambda: blend(smooth(image), image, 1 + amount('sharpness')),
    'posterize': lambda: posterize(image, bits),
    'solarize': lambda: solarize(image, threshold),
    'autocontrast': lambda: autocontrast(image),
    'equalize': lambda: equalize(image),
  }
  out = tf.switch_case(op, [branches[name] for name in OPS])
  return tf.ensure_shape(out, image.shape)


def _float(image):
  return tf.cast(image, tf.float32)


def blend(base, image, factor):
  """base + factor * (image - base), clipped and rounded to uint8: the
  enhancements of PIL's ImageEnhance (factor 1: the image)."""
  out = base + factor * (_float(image) - base)
  return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def grey(image):
  """The ITU-R 601 luma of each pixel, on every channel."""
  luma = tf.reduce_sum(
    _float(image) * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True
  )
  return tf.broadcast_to(luma, tf.shape(image))


def smooth(image):
  """PIL's SMOOTH filter (3x3, centre weight 5 of 13) inside the image;
  the border pixels stay as they are."""
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  x = _float(image)
  inner = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  return tf.pad(inner - x[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + x


def _transform(image, matrix):
  """The image sampled at matrix @ (x, y, 1) of each output pixel
  (nearest neighbour), FILL outside."""
  return tf.raw_ops.ImageProjectiveTransformV3(
    images=image[None],
    transforms=tf.reshape(tf.concat([matrix, [0.0, 0.0]], 0), [1, 8]),
    output_shape=tf.shape(image)[:2],
    fill_value=FILL,
    interpolation='NEAREST',
    fill_mode='CONSTANT',
  )[0]


def shear(image, sx, sy):
  return _transform(image, tf.stack([1.0, sx, 0.0, sy, 1.0, 0.0]))


def translate(image, dx, dy):
  return _transform(image, tf.stack([1.0, 0.0, dx, 0.0, 1.0, dy]))


def rotate(image, degrees):
  """Rotation about the image's centre."""
  h, w = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
  cy, cx = (h - 1) / 2, (w - 1) / 2
  a = degrees * math.pi / 180
  cos, sin = tf.cos(a), tf.sin(a)
  return _transform(
    image,
    tf.stack(
      [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy]
    ),
  )


def posterize(image, bits):
  """Keeps the `bits` high bits of each value."""
  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
  """Inverts the values at or above `threshold`."""
  return tf.where(_float(image) >= threshold, 255 - image, image)


def autocontrast(image):
  """Each channel stretched to 0-255 (left alone where it is flat)."""
  x = _float(image)
  low = tf.reduce_min(x, axis=(0, 1), keepdims=True)
  high = tf.reduce_max(x, axis=(0, 1), keepdims=True)
  span = high - low
  scale = tf.where(span > 0, 255.0 / tf.maximum(span, 1.0), 1.0)
  offset = tf.where(span > 0, low, 0.0)
  out = (x - offset) * scale
  return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def equalize(image):
  """PIL's histogram equalisation, channel by channel."""
  return tf.stack([_equalize_channel(image[..., c]) for c in range(3)], -1)


def _equalize_channel(channel):
  values = tf.cast(channel, tf.int32)
  histogram = tf.math.bincount(
    tf.reshape(values, [-1]), minlength=256, maxlength=256
  )
  # The count of the last value present is left out of the step.
  last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)))
  step = (tf.reduce_sum(histogram) - tf.cast(last, tf.int32)) // 255
  lut = (tf.cumsum(histogram, exclusive=True) + step // 2) // tf.maximum(
    step, 1
  )
  lut = tf.clip_by_value(lut, 0, 255)
  equalised = tf.cast(tf.gather(lut, values), tf.uint8)
  return tf.where(step > 0, equalised, channel)


def random_erasing(image, seed, probability: float, attempts: int = 10):
  """With `probability`, a box of 2-33% of the area and aspect 0.3-3.3
  (log-uniform) filled with uniform random pixels: the first of
  `attempts` draws that fits inside the image."""
  seeds = tf.random.experimental.stateless_split(seed, 6)
  h, w = tf.unstack(tf.shape(image)[:2])
  area = tf.cast(h * w, tf.float32)
  target = area * tf.random.stateless_uniform([attempts], seeds[0], 0.02, 1 / 3)
  log_ratio = tf.random.stateless_uniform(
    [attempts], seeds[1], math.log(0.3), math.log(1 / 0.3)
  )
  ratio = tf.exp(log_ratio)
  box_h = tf.cast(tf.round(tf.sqrt(target * ratio)), tf.int32)
  box_w = tf.cast(tf.round(tf.sqrt(target / ratio)), tf.int32)
  fits = (box_h < h) & (box_w < w) & (box_h > 0) & (box_w > 0)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  box_h, box_w = box_h[first], box_w[first]
  top = tf.cast(
    tf.random.stateless_uniform([], seeds[2])
    * tf.cast(h - box_h + 1, tf.float32),
    tf.int32,
  )
  left = tf.cast(
    tf.random.stateless_uniform([], seeds[3])
    * tf.cast(w - box_w + 1, tf.float32),
    tf.int32,
  )
  erase = tf.random.stateless_uniform([], seeds[4]) < probability
  erase &= tf.reduce_any(fits)

  def erased():  # noise drawn only for the box, only when erasing
    noise = tf.random.stateless_uniform(
      tf.stack([box_h, box_w, 3]), seeds[5], 0, 256, tf.int32
    )
    around = [[top, h - top - box_h], [left, w - left - box_w], [0, 0]]
    inside = tf.pad(tf.ones([box_h, box_w, 3], tf.bool), around)
    noise = tf.pad(tf.cast(noise, tf.uint8), around)
    return tf.where(inside, noise, image)

  return tf.cond(erase, erased, lambda: image)
