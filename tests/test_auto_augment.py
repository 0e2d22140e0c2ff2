"""RandAugment, TrivialAugment and random erasing on the host: each
operation against a direct computation, the draws' rates, determinism."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from resnet_jax.data import auto_augment as aa

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (15, 15, 3), dtype=np.uint8)
SEED = tf.constant([1, 2], tf.int64)


def op(name, strength, kind='trivial', image=IMAGE, negate=False):
  """Operation `name` at bin `strength`, with its sign drawn so that the
  amount is positive (or negative with `negate`)."""
  for s in range(100):  # a sign seed that gives the wanted sign
    seed = tf.constant([s, 0], tf.int64)
    if (tf.random.stateless_uniform([], seed) < 0.5).numpy() == negate:
      out = aa.apply(
        tf.constant(image), aa.OPS.index(name), strength, seed, kind
      )
      return out.numpy()
  raise AssertionError('no seed')


def test_colour_operations_against_their_formulas():
  x = IMAGE.astype(np.float64)
  # Posterize: trivial's bin 30 keeps 2 bits, rand's keeps 4.
  np.testing.assert_array_equal(op('posterize', 30), IMAGE & 0b11000000)
  np.testing.assert_array_equal(op('posterize', 30, 'rand'), IMAGE & 0xF0)
  np.testing.assert_array_equal(op('posterize', 0), IMAGE)
  # Solarize at bin 15: values >= 127.5 inverted.
  np.testing.assert_array_equal(
    op('solarize', 15), np.where(x >= 127.5, 255 - IMAGE, IMAGE)
  )
  # Brightness: a factor 1 + 0.99 * 10 / 30 towards white from black.
  factor = 1 + 0.99 * 10 / 30
  np.testing.assert_array_equal(
    op('brightness', 10), np.round(np.clip(x * factor, 0, 255))
  )
  grey = (x * [0.299, 0.587, 0.114]).sum(-1, keepdims=True)
  factor = 1 - 0.9 * 20 / 30  # negated, in RandAugment's range
  np.testing.assert_allclose(
    op('color', 20, 'rand', negate=True),
    np.round(np.clip(grey + factor * (x - grey), 0, 255)),
    atol=1,
  )
  mean = grey.mean()
  np.testing.assert_allclose(
    op('contrast', 20, 'rand', negate=True),
    np.round(np.clip(mean + factor * (x - mean), 0, 255)),
    atol=1,
  )
  low, high = x.min((0, 1)), x.max((0, 1))
  np.testing.assert_allclose(
    op('autocontrast', 0), np.round((x - low) * 255 / (high - low)), atol=1
  )
  np.testing.assert_array_equal(op('identity', 30), IMAGE)


def _equalised(channel):
  """PIL's ImageOps.equalize, written out for one channel."""
  histogram = np.bincount(channel.ravel(), minlength=256)
  last = histogram[np.nonzero(histogram)[0][-1]]
  step = (histogram.sum() - last) // 255
  if step == 0:
    return channel
  lut, n = [], step // 2
  for count in histogram:
    lut.append(min(255, n // step))
    n += count
  return np.asarray(lut, np.uint8)[channel]


def test_equalize_and_sharpness_against_direct_computations():
  expected = np.stack([_equalised(IMAGE[..., c]) for c in range(3)], -1)
  np.testing.assert_array_equal(op('equalize', 0), expected)
  # Sharpness, factor 1 + 0.99: the image pushed away from its 3x3 smooth
  # (centre weight 5 of 13); the border is left as it is.
  x = IMAGE.astype(np.float64)
  smooth = x.copy()
  for i in range(1, 14):
    for j in range(1, 14):
      window = x[i - 1 : i + 2, j - 1 : j + 2]
      smooth[i, j] = (window.sum((0, 1)) + 4 * x[i, j]) / 13
  factor = 1 + 0.99
  np.testing.assert_allclose(
    op('sharpness', 30),
    np.round(np.clip(smooth + factor * (x - smooth), 0, 255)),
    atol=1,
  )


def test_geometric_operations_move_pixels_and_fill_grey():
  # Translation by 4 pixels (trivial's 32 at bin 30: bin 3.75 is not one,
  # so 32 * 15 / 30 = 16; a 15-pixel image leaves only fill).
  moved = op('translate_x', 3)  # 32 * 3 / 30 = 3.2 pixels, nearest 3
  np.testing.assert_array_equal(moved[:, :-3], IMAGE[:, 3:])
  assert (moved[:, -3:] == 128).all()
  down = op('translate_y', 3, negate=True)  # -3.2: the other way
  np.testing.assert_array_equal(down[3:], IMAGE[:-3])
  assert (down[:3] == 128).all()
  # Rotation by 135 degrees at bin 30; by 90 at bin 20: a quarter turn.
  quarter = op('rotate', 20)
  assert any(
    np.array_equal(quarter, np.rot90(IMAGE, k, axes=(0, 1))) for k in (1, 3)
  )
  # Shear x by 0.99 * 10/30 = 0.33: row y samples x + 0.33 y.
  sheared = op('shear_x', 10)
  for y in (0, 6, 12):
    shift = int(np.round(0.33 * y + 1e-9))
    np.testing.assert_array_equal(
      sheared[y, : 15 - shift - 1], IMAGE[y, shift:14]
    )


def test_trivial_augment_draws_each_operation_alike_and_is_seeded():
  image = tf.constant(IMAGE)
  seeds = [tf.constant([7, i], tf.int64) for i in range(700)]
  drawn = collections.Counter()
  for seed in seeds[:700]:
    op_seed = tf.random.experimental.stateless_split(seed, 3)[0]
    drawn[int(tf.random.stateless_uniform([], op_seed, 0, 14, tf.int32))] += 1
  assert len(drawn) == 14 and min(drawn.values()) > 25  # ~50 each
  a = aa.trivial_augment(image, seeds[3]).numpy()
  np.testing.assert_array_equal(a, aa.trivial_augment(image, seeds[3]))
  outs = [aa.rand_augment(image, s, 2, 9).numpy() for s in seeds[:20]]
  assert len({o.tobytes() for o in outs}) > 10  # the seed decides


@pytest.mark.parametrize('size', [(15, 15), (40, 24)])
def test_random_erasing_boxes_and_rate(size):
  image = tf.zeros((*size, 3), tf.uint8)
  areas, ratios, erased = [], [], 0
  for i in range(300):
    out = aa.random_erasing(image, tf.constant([3, i], tf.int64), 0.5).numpy()
    changed = (out != 0).any(-1)
    if not changed.any():
      continue
    erased += 1
    rows, cols = np.nonzero(changed)
    h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
    areas.append(h * w / (size[0] * size[1]))
    ratios.append(h / w)
  assert abs(erased / 300 - 0.5) < 0.1
  # 2-33% of the area (rounded sides), aspect 0.3-3.3, up to rounding.
  assert 0.005 < min(areas) and max(areas) < 0.45
  assert min(ratios) > 0.2 and max(ratios) < 5


def test_an_unknown_augmentation_is_refused_before_reading():
  from resnet_jax.data import inputs
  from resnet_jax.errors import ConfigError
  from tests.test_image_sets import data_config

  with pytest.raises(ConfigError, match="auto_augment='auto' is not one of"):
    inputs._check_data_config(data_config(auto_augment='auto'))
