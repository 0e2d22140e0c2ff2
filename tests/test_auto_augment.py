"""RandAugment, TrivialAugment and random erasing on the host: each
operation against a direct computation, the draws' rates, determinism."""

import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageOps
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
  # Every bin: torchvision's tables, 8 - round(k / 5) bits kept for
  # TrivialAugment, 8 - round(k / 7.5) for RandAugment.
  for k in range(31):
    for kind, per_bit in (('trivial', 5), ('rand', 7.5)):
      bits = 8 - round(k / per_bit)
      mask = (0xFF << (8 - bits)) & 0xFF
      np.testing.assert_array_equal(op('posterize', k, kind), IMAGE & mask)
  # Solarize at bin 15: values >= 127.5 inverted.
  np.testing.assert_array_equal(
    op('solarize', 15), np.where(x >= 127.5, 255 - IMAGE, IMAGE)
  )
  # At bins 0, 10 and 30 the threshold is a whole value, 255, 170 and 0
  # (torchvision's linspace(255, 0, 31)), and that value is inverted too.
  every = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, -1)
  for strength, threshold in ((0, 255), (10, 170), (30, 0)):
    np.testing.assert_array_equal(
      op('solarize', strength, image=every),
      np.where(every >= threshold, 255 - every, every),
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
  # Channel by channel: ranges 40-103, 0-63 and a flat 77, left alone.
  narrow = IMAGE // 4 + np.array([40, 0, 0], np.uint8)
  narrow[..., 2] = 77
  x = narrow.astype(np.float64)
  low, high = x[..., :2].min((0, 1)), x[..., :2].max((0, 1))
  stretched = op('autocontrast', 0, image=narrow)
  # Exact: a span of 63 puts no value at a rounding tie.
  np.testing.assert_array_equal(
    stretched[..., :2], np.round((x[..., :2] - low) * 255 / (high - low))
  )
  np.testing.assert_array_equal(stretched[..., 2], narrow[..., 2])
  # Two neighbouring values (a span of 1) become black and white.
  narrow[..., 2] = 77 + IMAGE[..., 2] % 2
  stretched = op('autocontrast', 0, image=narrow)
  np.testing.assert_array_equal(stretched[..., 2], 255 * (IMAGE[..., 2] % 2))
  np.testing.assert_array_equal(op('identity', 30), IMAGE)


def _skewed_image():
  """64 x 48 pixels whose channels equalise differently: dark-skewed
  values, a narrow range with a heavy last value, and a full range whose
  top value occurs once, above a common one."""
  rng = np.random.default_rng(1)
  dark = (rng.random((64, 48)) ** 2 * 200).astype(np.uint8)
  narrow = rng.integers(100, 141, (64, 48)).astype(np.uint8)
  narrow[:8] = 140
  full = rng.integers(0, 250, (64, 48)).astype(np.uint8)
  full[1] = 249  # the value below the top one common: the step counts
  full[0, 0] = 250  # the top value's count alone
  return np.stack([dark, narrow, full], -1)


def test_equalize_and_sharpness_against_direct_computations():
  """Equalisation equals PIL's ImageOps.equalize (the reference of the
  AutoAugment and RandAugment code) on images whose histogram step
  (pixels but the last value's, over 255) is 0 (the 15 x 15 image: left as
  it is), 1 (20 x 20) and 10-12 (the skewed image, where the top value's
  entry of PIL's table passes 255 and is clipped)."""
  small = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)
  for image in (IMAGE, small, _skewed_image()):
    pil = ImageOps.equalize(Image.fromarray(image))
    np.testing.assert_array_equal(op('equalize', 0, image=image), pil)
  np.testing.assert_array_equal(op('equalize', 0), IMAGE)
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
  # Shear y alike: column x samples y + 0.33 x, and only that.
  sheared = op('shear_y', 10)
  for x in (0, 6, 12):
    shift = int(np.round(0.33 * x + 1e-9))
    np.testing.assert_array_equal(
      sheared[: 15 - shift - 1, x], IMAGE[shift:14, x]
    )


def _recorded_draws(monkeypatch, augment, count):
  """The (operation, strength, kind) that `augment(image, seed)` hands to
  aa.apply, for `count` seeds: the real draw, recorded on its way."""
  draws, real_apply = [], aa.apply

  def recording(image, op, strength, sign_seed, kind):
    draws.append((int(op), int(strength), kind))
    return real_apply(image, op, strength, sign_seed, kind)

  monkeypatch.setattr(aa, 'apply', recording)
  image = tf.constant(IMAGE)
  for i in range(count):
    augment(image, tf.constant([7, i], tf.int64))
  return draws


def _chi_square_uniform(values, k):
  """Pearson's statistic of `values` against uniform on 0..k-1; its 99.9%
  point for k - 1 degrees of freedom is under 2.2 k + 10 for these k."""
  counts = np.bincount(values, minlength=k)
  assert len(counts) == k, f'a value past {k - 1}'
  expected = len(values) / k
  return ((counts - expected) ** 2 / expected).sum(), 2.2 * k + 10


def test_trivial_augment_draws_one_operation_and_strength_uniformly(
  monkeypatch,
):
  draws = _recorded_draws(monkeypatch, aa.trivial_augment, 620)
  assert len(draws) == 620 and {kind for *_, kind in draws} == {'trivial'}
  ops = [op for op, _, _ in draws]
  strengths = [strength for _, strength, _ in draws]
  for values, k in ((ops, len(aa.OPS)), (strengths, aa.BINS)):
    statistic, limit = _chi_square_uniform(values, k)
    assert statistic < limit, (k, statistic)
  assert min(strengths) == 0 and max(strengths) == 30  # both ends reached


def test_rand_augment_draws_its_count_of_operations_at_its_magnitude(
  monkeypatch,
):
  draws = _recorded_draws(
    monkeypatch, lambda image, seed: aa.rand_augment(image, seed, 3, 9), 200
  )
  assert len(draws) == 600  # three operations an image
  assert {(strength, kind) for _, strength, kind in draws} == {(9, 'rand')}
  statistic, limit = _chi_square_uniform([op for op, *_ in draws], 14)
  assert statistic < limit
  # The three of an image are drawn apart, not one operation three times.
  triples = [tuple(op for op, *_ in draws[i : i + 3]) for i in range(0, 600, 3)]
  assert sum(len(set(t)) == 1 for t in triples) < 10  # 1/196 each


def test_rand_augment_magnitudes_and_translation_by_the_side():
  # A 15 x 30 image: RandAugment translates by 150/331 of the side at
  # bin 30, so magnitude 9 moves 0.136 of it: 2 rows, 4 columns.
  wide = RNG.integers(0, 256, (15, 30, 3), dtype=np.uint8)
  across = op('translate_x', 9, 'rand', image=wide)
  np.testing.assert_array_equal(across[:, :-4], wide[:, 4:])
  assert (across[:, -4:] == 128).all()
  down = op('translate_y', 9, 'rand', image=wide)
  np.testing.assert_array_equal(down[:-2], wide[2:])
  assert (down[-2:] == 128).all()
  # Brightness at magnitude 10: a factor 1 + 0.9 * 10 / 30.
  x = IMAGE.astype(np.float64)
  np.testing.assert_allclose(
    op('brightness', 10, 'rand'), np.round(np.clip(x * 1.3, 0, 255)), atol=1
  )
  # Solarize's threshold does not depend on the kind: 255 * (1 - 9/30).
  np.testing.assert_array_equal(
    op('solarize', 9, 'rand'), np.where(x >= 178.5, 255 - IMAGE, IMAGE)
  )
  # Rotation at magnitude 30: 30 degrees, whose corners fall outside.
  turned = op('rotate', 30, 'rand', image=wide)
  assert (turned[0, 0] == 128).all() and not np.array_equal(turned, wide)


def test_rotation_turns_the_sampling_grid_about_the_centre():
  """Positive degrees turn the picture counter-clockwise (PIL's
  convention): output pixel (x, y) reads the input at the point turned by
  the angle about the centre, nearest neighbour, grey outside. The image
  is not square (the centre's x and y differ) and each pixel holds its own
  row and column, so every output pixel says where it was read from."""
  h, w = 40, 50
  rows, cols = np.mgrid[:h, :w]
  grid = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
  turned = aa.rotate(tf.constant(grid), 30.0).numpy()
  a = np.deg2rad(30.0)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  src_x = cx + np.cos(a) * (cols - cx) - np.sin(a) * (rows - cy)
  src_y = cy + np.sin(a) * (cols - cx) + np.cos(a) * (rows - cy)
  # Pixels whose source lies within 0.05 of a rounding tie are left out.
  clear = (np.abs(src_x % 1 - 0.5) > 0.05) & (np.abs(src_y % 1 - 0.5) > 0.05)
  near_x, near_y = np.round(src_x).astype(int), np.round(src_y).astype(int)
  inside = (near_x >= 0) & (near_x < w) & (near_y >= 0) & (near_y < h)
  assert clear.mean() > 0.75 and (clear & inside).sum() > 1000
  np.testing.assert_array_equal(
    turned[clear & inside, 0], near_y[clear & inside]
  )
  np.testing.assert_array_equal(
    turned[clear & inside, 1], near_x[clear & inside]
  )
  assert (turned[clear & ~inside] == 128).all() and (
    clear & ~inside
  ).sum() > 200


def test_augmentations_are_seeded():
  image = tf.constant(IMAGE)
  seeds = [tf.constant([7, i], tf.int64) for i in range(20)]
  a = aa.trivial_augment(image, seeds[3]).numpy()
  np.testing.assert_array_equal(a, aa.trivial_augment(image, seeds[3]))
  outs = [aa.rand_augment(image, s, 2, 9).numpy() for s in seeds]
  assert len({o.tobytes() for o in outs}) > 10  # the seed decides


@pytest.mark.parametrize('size', [(15, 15), (40, 24)])
def test_random_erasing_boxes_and_rate(size):
  image = tf.zeros((*size, 3), tf.uint8)
  h, w = size
  areas, log_ratios, erased, edges = [], [], 0, set()
  for i in range(300):
    out = aa.random_erasing(image, tf.constant([3, i], tf.int64), 0.5).numpy()
    changed = (out != 0).any(-1)
    if not changed.any():
      continue
    erased += 1
    rows, cols = np.nonzero(changed)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    box = changed[top : bottom + 1, left : right + 1]
    assert box.mean() > 0.99  # a filled rectangle (a noise pixel may be 0)
    box_h, box_w = bottom - top + 1, right - left + 1
    assert box_h < h and box_w < w
    # The drawn sides, before rounding, lie within half a pixel of these:
    # the drawn area 2-33% of the image, the aspect 0.3-3.3.
    assert (box_h - 0.5) * (box_w - 0.5) <= h * w / 3
    assert (box_h + 0.5) * (box_w + 0.5) >= 0.02 * h * w
    assert (box_h - 0.5) / (box_w + 0.5) <= 1 / 0.3
    assert (box_h + 0.5) / (box_w - 0.5) >= 0.3
    areas.append(box_h * box_w / (h * w))
    log_ratios.append(np.log(box_h / box_w))
    edges |= {top == 0 and 'top', bottom == h - 1 and 'bottom'}
    edges |= {left == 0 and 'left', right == w - 1 and 'right'}
    noise = out[top : bottom + 1, left : right + 1]
    assert noise.max() > 200 and noise.min() < 50  # uniform over 0..255
  assert abs(erased / 300 - 0.5) < 0.1
  assert edges >= {'top', 'bottom', 'left', 'right'}  # every place reached
  if size == (40, 24):  # large enough for the draws' shapes to show
    assert 0.1 < np.mean(areas) < 0.2  # uniform 2-33%: 0.18 before refits
    assert abs(np.mean(log_ratios)) < 0.25  # log-uniform about 1
    assert max(log_ratios) > 0.6 and min(log_ratios) < -0.6


def test_random_erasing_draws_area_aspect_and_place_independently():
  """On a 96 x 96 image, 1,000 erasures: the area reaches a third of the
  image, the aspect 3.3 and 1 / 3.3 (the sides of boxes of 8-25% of the
  area are large enough for rounding not to make them), and the area,
  the aspect and the place are drawn apart from each other; the box is
  filled with uniform values."""
  side = 96
  image = tf.zeros((side, side, 3), tf.uint8)
  erase = tf.function(lambda seed: aa.random_erasing(image, seed, 1.0))
  draws, values = [], np.zeros(256, np.int64)
  for i in range(1000):
    out = erase(tf.constant([5, i], tf.int64)).numpy()
    rows, cols = np.nonzero((out != 0).any(-1))
    top, left = rows.min(), cols.min()
    box_h, box_w = rows.max() - top + 1, cols.max() - left + 1
    box = out[top : top + box_h, left : left + box_w]
    values += np.bincount(box.ravel(), minlength=256)
    draws.append(
      (
        box_h * box_w / side**2,
        np.log(box_h / box_w),
        top / (side - box_h + 1),  # where it is, as a fraction of where
        left / (side - box_w + 1),  # it could be
      )
    )
  area, log_ratio, top, left = np.array(draws).T
  assert area.max() > 0.3 and area.min() < 0.03
  mid = (area > 0.08) & (area < 0.25)
  assert log_ratio[mid].max() > 1.1 and log_ratio[mid].min() < -1.1
  correlation = np.corrcoef([area, log_ratio, top, left])
  assert np.abs(correlation - np.eye(4)).max() < 0.15, correlation
  # The fill: every value 0-255 equally often (about 19,000 of each:
  # within 5% is 7 standard deviations).
  assert np.abs(values / values.mean() - 1).max() < 0.05, values


def test_the_config_gets_exactly_the_augmentations_it_names():
  """data.auto_augment and data.random_erasing each alone, both (the
  policy first, then erasing, each on its own half of the image's seed),
  and neither (no function: the pipeline skips the step)."""

  def augment(kind, erasing):
    data = ml_collections.ConfigDict(
      dict(
        auto_augment=kind,
        random_erasing=erasing,
        rand_augment_ops=2,
        rand_augment_magnitude=9,
      )
    )
    return aa.for_config(data)

  assert augment(None, 0.0) is None
  image = tf.constant(IMAGE)
  for i in range(3):
    seed = tf.constant([4, i], tf.int64)
    op_seed, erase_seed = tf.random.experimental.stateless_split(seed, 2)
    expected = {
      (None, 1.0): aa.random_erasing(image, erase_seed, 1.0),
      ('trivial', 0.0): aa.trivial_augment(image, op_seed),
      ('rand', 0.0): aa.rand_augment(image, op_seed, 2, 9),
      ('rand', 1.0): aa.random_erasing(
        aa.rand_augment(image, op_seed, 2, 9), erase_seed, 1.0
      ),
    }
    for (kind, erasing), want in expected.items():
      got = augment(kind, erasing)(image, seed)
      np.testing.assert_array_equal(got, want, err_msg=f'{kind} {erasing}')
  # Erasing alone changes the image (the expected values are not it).
  assert not np.array_equal(expected[None, 1.0], IMAGE)


def test_an_unknown_augmentation_is_refused_before_reading():
  from resnet_jax.data import inputs
  from resnet_jax.errors import ConfigError
  from tests.test_image_sets import data_config

  with pytest.raises(ConfigError, match="auto_augment='auto' is not one of"):
    inputs._check_data_config(data_config(auto_augment='auto'))
