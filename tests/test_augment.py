"""On-device batch order and augmentation."""

import jax
import jax.numpy as jnp
import numpy as np

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
