"""On-device batch order and augmentation."""

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from resnet_jax import parallel
from resnet_jax.data import augment


def test_each_epoch_visits_every_example_once():
  key = jax.random.key(0)
  n, batch = 100, 8  # 12 full batches an epoch; 4 examples dropped
  for epoch in range(2):
    seen = np.concatenate(
      [
        augment.batch_indices(key, epoch * 12 + s, n, batch, jnp.arange(batch))
        for s in range(12)
      ]
    )
    assert len(set(seen.tolist())) == 96
  first = augment.batch_indices(key, 0, n, batch, jnp.arange(batch))
  second_epoch = augment.batch_indices(key, 12, n, batch, jnp.arange(batch))
  assert not np.array_equal(first, second_epoch)  # reshuffled each epoch


def test_batch_is_a_pure_function_of_seed_and_step_not_of_devices():
  images = jax.random.randint(
    jax.random.key(1), (50, 32, 32, 3), 0, 256, dtype=jnp.int32
  ).astype(jnp.uint8)
  labels = jnp.arange(50, dtype=jnp.int32)
  mean = jnp.full((32, 32, 3), 100.0)
  key = jax.random.key(7)
  whole = augment.train_batch(images, labels, mean, key, 13, 16, jnp.arange(16))
  # Four devices' slices of the same global batch, computed separately.
  parts = [
    augment.train_batch(
      images, labels, mean, key, 13, 16, jnp.arange(4 * d, 4 * d + 4)
    )
    for d in range(4)
  ]
  np.testing.assert_array_equal(whole[0], np.concatenate([p[0] for p in parts]))
  np.testing.assert_array_equal(whole[1], np.concatenate([p[1] for p in parts]))
  again = augment.train_batch(images, labels, mean, key, 13, 16, jnp.arange(16))
  np.testing.assert_array_equal(whole[0], again[0])
  # An epoch (3 batches of 16 of the 50 examples) draws each example at
  # most once, from all 50; unaugmented, each image is its label's.
  epoch = [
    augment.train_batch(
      images, labels, mean, key, s, 16, jnp.arange(16), augment=False
    )
    for s in range(3)
  ]
  seen = np.concatenate([y for _, y in epoch])
  assert len(set(seen.tolist())) == 48 and seen.max() >= 32
  for x, y in epoch:
    np.testing.assert_array_equal(x, np.asarray(images)[y] - 100.0)


def test_crop_and_flip_is_a_window_of_the_padded_image():
  image = jax.random.normal(jax.random.key(0), (32, 32, 3))
  padded = np.pad(np.asarray(image), ((4, 4), (4, 4), (0, 0)))
  windows = {(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)}
  found = set()
  for i in range(40):
    out = np.asarray(augment.crop_and_flip(jax.random.key(i), image))
    match = [
      w
      for w in windows
      if np.array_equal(
        out,
        (lambda c: c[:, ::-1] if w[2] else c)(
          padded[w[0] : w[0] + 32, w[1] : w[1] + 32]
        ),
      )
    ]
    assert match, 'output is not a (flipped) crop of the padded image'
    found.add(match[0])
  assert len({f for _, _, f in found}) == 2  # both flipped and not
  assert len({(dy, dx) for dy, dx, _ in found}) > 10  # many offsets
  # Each offset uniform over 0..8: read back from 2,000 crops of an image
  # of its own (row + 1, column + 1), whose centre the crop always keeps.
  rows, cols = np.mgrid[1:33, 1:33].astype(np.float32)
  image = jnp.stack([rows, cols, 0 * rows], -1)
  keys = jax.random.split(jax.random.key(3), 2000)
  out = np.asarray(jax.vmap(lambda k: augment.crop_and_flip(k, image))(keys))
  dy = out[:, 16, 16, 0] - 13  # window row 16 is image row dy + 12
  dx = np.minimum(out[:, 16, 15, 1], out[:, 16, 16, 1]) - 12
  for offsets in (dy, dx):
    counts = np.bincount(offsets.astype(int), minlength=9)
    assert len(counts) == 9 and counts.min() > 170 and counts.max() < 280
  assert abs(np.corrcoef(dy, dx)[0, 1]) < 0.1


def test_pca_lighting_shifts_each_image_by_one_colour():
  images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3)) * 255
  key = jax.random.key(1)
  out = augment.normalise_and_light(images, 0.0, key, 3, jnp.arange(4), 0.1)
  shift = np.asarray(out - images)
  assert np.allclose(shift, shift[:, :1, :1, :], atol=1e-3)  # one RGB offset
  assert not np.allclose(shift[0, 0, 0], shift[1, 0, 0])  # per image
  # The offset lies along the eigenvectors, scaled by the eigenvalues.
  alpha = np.linalg.solve(augment.PCA_EIGVEC, shift[:, 0, 0].T).T
  alpha /= augment.PCA_EIGVAL
  assert np.abs(alpha).max() < 0.5  # std 0.1: within 5 sigma
  off = augment.normalise_and_light(images, 0.0, key, 3, jnp.arange(4), 0.0)
  np.testing.assert_array_equal(off, images)


def test_pca_lighting_alpha_is_a_normal_draw_per_image_with_its_std():
  """AlexNet's lighting: image + eigvec @ (alpha * eigval), alpha ~
  N(0, std) drawn for each channel of each image, from the key of
  (seed, step, position). Read back from the shifts of 4,000 one-pixel
  images, at a std other than the default."""
  n, std = 4000, 0.25
  images = jnp.zeros((n, 1, 1, 3))
  key = jax.random.key(7)
  out = augment.normalise_and_light(images, 0.0, key, 5, jnp.arange(n), std)
  shift = np.asarray(out, np.float64)[:, 0, 0, :]
  alpha = np.linalg.solve(augment.PCA_EIGVEC, shift.T).T / augment.PCA_EIGVAL
  assert np.all(np.abs(alpha.mean(0)) < 4 * std / np.sqrt(n))
  np.testing.assert_allclose(alpha.std(0), std, rtol=0.05)
  corr = np.corrcoef(alpha.T)[np.triu_indices(3, 1)]
  assert np.all(np.abs(corr) < 0.1)  # three independent draws
  # Which draw: image i's key is fold_in(fold_in(key, step), i), and the
  # shift is added, not subtracted.
  step_key = jax.random.fold_in(key, 5)
  for i in (0, 1, n - 1):
    z = jax.random.normal(jax.random.fold_in(step_key, i), (3,))
    np.testing.assert_allclose(alpha[i], std * np.asarray(z), rtol=1e-4)


MIX = jax.jit(augment.mix, static_argnums=5)
BOTH = augment.Mixing(
  mixup_alpha=0.4, cutmix_alpha=1.0, prob=0.75, switch_prob=0.3, per='example'
)


def _mix(n, size, mixing, step=3, positions=None):
  images = jax.random.normal(jax.random.key(2), (n, size, size, 3))
  labels = jnp.arange(n, dtype=jnp.int32) % 10
  positions = jnp.arange(n) if positions is None else positions
  mixed, targets = MIX(
    jax.random.key(5), step, positions, images, labels, mixing
  )
  return (np.asarray(images), np.asarray(labels), np.asarray(mixed), targets)


def _kinds(x, out, weight):
  """What was done to each example ('none', 'mixup', 'cutmix'), read from
  the images alone, and each one's box (or None); asserts that the
  weights are those of what was done."""
  n, size = x.shape[:2]
  kinds, boxes = [], []
  for i in range(n):
    own, partner = x[i], x[n - 1 - i]
    changed = np.any(out[i] != own, axis=-1)  # (size, size)
    box = None
    if not changed.any():
      assert weight[i] == 1.0
      kinds.append('none')
    elif changed.all() and np.allclose(
      out[i], weight[i] * own + (1 - weight[i]) * partner, atol=1e-6
    ):
      assert 0 < weight[i] < 1
      kinds.append('mixup')
    else:  # CutMix: a rectangle of the partner, the weight its complement
      rows, cols = np.nonzero(changed)
      box = np.zeros_like(changed)
      box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
      np.testing.assert_array_equal(changed, box)
      np.testing.assert_array_equal(out[i][box], partner[box])
      np.testing.assert_array_equal(out[i][~box], own[~box])
      assert weight[i] == pytest.approx(1 - box.sum() / size**2, rel=1e-6)
      kinds.append('cutmix')
    boxes.append(box)
  return kinds, boxes


def test_mixup_and_cutmix_pairs_areas_and_weights_against_direct_computation():
  n, size = 512, 12
  x, y, out, t = _mix(n, size, BOTH)
  np.testing.assert_array_equal(t.labels, y)
  np.testing.assert_array_equal(t.partners, y[::-1])  # the mirrored example
  kinds, _ = _kinds(x, out, np.asarray(t.weight))
  counts = {k: kinds.count(k) for k in ('none', 'mixup', 'cutmix')}
  # mix_prob 0.75 (an empty CutMix box also leaves an example as it was),
  # then CutMix at switch_prob 0.3 (0.7 would be the two swapped).
  assert abs(counts['none'] / n - 0.25) < 0.06, counts
  assert abs(counts['cutmix'] / (n - counts['none']) - 0.3) < 0.07, counts
  # CutMix alone cuts every example (but the few whose box is empty: a
  # side under 2 pixels, 1 - lambda < 1/36 at Beta(1, 1)).
  alone = augment.Mixing(cutmix_alpha=1.0, per='example')
  x, _, out, t = _mix(64, size, alone)
  kinds, _ = _kinds(x, out, np.asarray(t.weight))
  assert kinds.count('cutmix') >= 58, kinds.count('cutmix')


def test_one_draw_for_the_whole_batch_by_default():
  n, size = 16, 12
  for step in range(12):
    per_batch = dataclasses.replace(BOTH, per='batch')
    x, _, out, t = _mix(n, size, per_batch, step=step)
    weight = np.asarray(t.weight)
    kinds, boxes = _kinds(x, out, weight)
    assert len(set(kinds)) == 1 and (weight == weight[0]).all(), step
    if kinds[0] == 'cutmix':  # the same box in every image
      assert all((b == boxes[0]).all() for b in boxes), step
  assert augment.Mixing().per == 'batch'


def test_mixup_weights_are_beta_alpha_alpha():
  n = 4096
  for alpha in (0.2, 1.0):
    mixing = augment.Mixing(mixup_alpha=alpha, prob=0.75, per='example')
    _, _, _, t = _mix(n, 4, mixing)
    weight = np.asarray(t.weight)
    mixed = weight < 1
    assert abs(mixed.mean() - 0.75) < 0.03  # mix_prob
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)), which pins a.
    lam = weight[mixed]
    assert abs(lam.mean() - 0.5) < 0.02
    assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.06)
  _, _, out, t = _mix(64, 4, augment.Mixing(mixup_alpha=0.2, prob=0.0))
  assert (np.asarray(t.weight) == 1).all()


def test_cutmix_box_centre_is_uniform_and_its_side_sqrt_one_minus_lambda():
  size, lam, draws = 32, 0.75, 4000  # sides 32 * 0.5: half-side 8
  keys = jax.random.split(jax.random.key(7), draws)
  top, bottom, left, right = jax.vmap(
    lambda k: augment.cutmix_box(k, size, size, lam)
  )(keys)
  top, bottom, left, right = map(np.asarray, (top, bottom, left, right))
  # Row (column) r is covered when the centre is in [r - 7, r + 8]
  # (clipped to the image): with a uniform centre, that many of 32.
  rows = np.arange(size)
  expected = (
    np.minimum(rows + 8, size - 1) - np.maximum(rows - 7, 0) + 1
  ) / size
  for low, high in ((top, bottom), (left, right)):
    inside = (rows >= low[:, None]) & (rows < high[:, None])
    np.testing.assert_allclose(inside.mean(0), expected, atol=0.035)
  assert ((bottom - top) <= 16).all() and ((right - left) <= 16).all()
  assert (right - left).max() == 16  # unclipped: the whole side
  # The centres themselves, read back from the clipped boxes: every pixel
  # row and column of the 32, the edges included, about equally often.
  for low, high in ((top, bottom), (left, right)):
    centre = np.where(high < size, high - 8, low + 8)
    counts = np.bincount(centre, minlength=size)
    assert len(counts) == size and counts.min() > 80 and counts.max() < 170


def test_mixing_is_the_same_on_any_number_of_devices():
  """Pairs by global position: eight devices' batches mix exactly as the
  one batch on one device (the partner of most examples is on another
  device)."""
  mesh = parallel.make_mesh(jax.devices()[:8])
  n, size = 32, 6
  images = jax.random.normal(jax.random.key(2), (n, size, size, 3))
  labels = jnp.arange(n, dtype=jnp.int32)
  for mixing in (BOTH, dataclasses.replace(BOTH, per='batch')):
    key = jax.random.key(5)

    def per_device(x, y):
      local = x.shape[0]
      positions = jax.lax.axis_index('data') * local + jnp.arange(local)
      return augment.mix(key, 3, positions, x, y, mixing, parallel.AXIS)

    sharded = jax.jit(
      jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(parallel.AXIS), P(parallel.AXIS)),
        out_specs=P(parallel.AXIS),
      )
    )(*parallel.shard_batch(mesh, (images, labels)))
    whole = MIX(key, 3, jnp.arange(n), images, labels, mixing)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(whole)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sharded[1].partners, n - 1 - labels)


def test_mixing_draws_depend_on_seed_step_and_position_only():
  _, _, _, whole = _mix(16, 8, BOTH)
  # The second half of the same global batch, on a device of its own:
  # other partners, the same draws (kind, weight, box).
  _, _, _, half = _mix(8, 8, BOTH, positions=jnp.arange(8, 16))
  np.testing.assert_array_equal(whole.weight[8:], half.weight)
  _, _, _, later = _mix(16, 8, BOTH, step=4)
  assert not np.array_equal(whole.weight, later.weight)  # new step, new draws


def _upsampled(mean, h, w):
  """Bilinear upsampling with half-pixel centres (TensorFlow's and
  jax.image's convention), written out: output row i reads input row
  (i + 0.5) * in / out - 0.5, clamped to the edge, between its neighbours."""

  def weights(n_out, n_in):
    at = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(at).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), low] += 1 - (at - low)
    matrix[np.arange(n_out), high] += at - low
    return matrix

  return np.einsum(
    'hi,wj,ijc->hwc', weights(h, mean.shape[0]), weights(w, mean.shape[1]), mean
  )


def test_normalise_subtracts_a_mean_per_channel_or_per_pixel_resized():
  """The per-channel mean broadcasts; a per-pixel mean of the view's size
  is taken as it is; one of another size (the training crop's, under a
  larger multi-scale view) is resized bilinearly to the view first."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 6, 8, 3), dtype=np.uint8)
  x = images.astype(np.float64)
  per_channel = rng.uniform(100, 130, (1, 1, 3))
  per_pixel = rng.uniform(100, 130, (6, 8, 3))
  crop_mean = rng.uniform(100, 130, (4, 4, 3))
  for mean, expected in (
    (per_channel, x - per_channel),
    (per_pixel, x - per_pixel),
    (crop_mean, x - _upsampled(crop_mean, 6, 8)),
  ):
    out = augment.normalise(jnp.asarray(images), mean)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_mixing_reads_each_of_its_keys_and_refuses_an_unknown_draw():
  from ml_collections import ConfigDict

  from resnet_jax.errors import ConfigError

  def data(**keys):
    base = dict(
      mixup_alpha=0.2,
      cutmix_alpha=1.0,
      mix_prob=0.6,
      mix_switch_prob=0.3,
      mix_lambda='example',
    )
    return ConfigDict({**base, **keys})

  assert augment.Mixing.from_config(data()) == augment.Mixing(
    mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.6, switch_prob=0.3, per='example'
  )
  # Off: both alphas 0, or a chance of 0; one alpha is enough to mix.
  assert (
    augment.Mixing.from_config(data(mixup_alpha=0.0, cutmix_alpha=0.0)) is None
  )
  assert augment.Mixing.from_config(data(mix_prob=0.0)) is None
  assert augment.Mixing.from_config(data(mixup_alpha=0.0)).cutmix_alpha == 1.0
  with pytest.raises(ConfigError) as refused:
    augment.Mixing.from_config(data(mix_lambda='pair'))
  assert str(refused.value) == (
    "data.mix_lambda='pair' is not one of batch, example"
  )
