"""Image operations in TensorFlow (the paper's ImageNet crops and views),
run by tf.data on the CPU.

Training (section 3.4): the shorter side resized to a random length in
[256, 480], a random 224x224 crop, a random horizontal flip. Evaluation:
one centre crop, the paper's 10 crops, or its fully-convolutional
multi-scale test. Every function returns uint8 images; mean subtraction
and the PCA lighting noise happen on the device, in float32 (augment.py).

The crop window is known before decoding, so only that window of a JPEG
is decoded (tf.image.decode_and_crop_jpeg): resizing the shorter side to S
and then cropping 224 equals cropping the matching 224/scale window of the
original and resizing it to 224. Other formats (the PNGs of some tfds
datasets) are decoded whole, then cropped.
"""

from resnet_jax.data import tf_cpu

tf = tf_cpu.tensorflow()

JPEG_MAGIC = b'\xff\xd8\xff'
# What tf.io.decode_image reads, by first bytes: JPEG, PNG, GIF, BMP.
IMAGE_MAGIC = (JPEG_MAGIC, b'\x89PNG', b'GIF8', b'BM')
CROP = 224
TEN_CROP_SIDE = 256  # shorter side before the 10 crops (and the centre crop)


def to_uint8(image):
  """Rounds resized pixels to uint8. Bilinear (and its antialiased form)
  weighs pixels with non-negative weights that sum to one, so the values
  stay in [0, 255]: no clipping needed, and adding 0.5 before truncating
  rounds, and is cheaper than round and clip."""
  return tf.cast(image + 0.5, tf.uint8)


def is_jpeg(data):
  return tf.equal(tf.strings.substr(data, 0, 3), JPEG_MAGIC)


def is_image(data):
  """Whether encoded bytes start as an image that `decode` reads."""
  return tf.reduce_any(
    [
      tf.equal(tf.strings.substr(data, 0, len(magic)), magic)
      for magic in IMAGE_MAGIC
    ]
  )


def decode(data):
  """An encoded JPEG, PNG, GIF or BMP -> (H, W, 3) uint8."""
  return tf.io.decode_image(data, channels=3, expand_animations=False)


def image_shape(data):
  """(height, width) of an encoded image: a JPEG's from its header."""
  shape = tf.cond(
    is_jpeg(data),
    lambda: tf.image.extract_jpeg_shape(data),
    lambda: tf.shape(decode(data)),
  )
  return tf.unstack(shape[:2])


def decode_window(jpeg, top, left, height, width, size, antialias=True):
  """The window decoded alone, then resized to `size` x `size` uint8.

  Training crops pass antialias=False: antialiasing about halved the host
  pipeline's speed on a 2-core machine (docs/benchmarks.md) for a crop
  whose scale is random anyway; evaluation keeps it.
  """
  window = tf.stack([top, left, height, width])
  image = tf.cond(
    is_jpeg(jpeg),
    lambda: tf.image.decode_and_crop_jpeg(jpeg, window, channels=3),
    lambda: decode(jpeg)[top : top + height, left : left + width],
  )
  image = tf.image.resize(
    image, (size, size), method='bilinear', antialias=antialias
  )
  return to_uint8(image)


def scale_augment(jpeg, seed, min_side=256, max_side=480, size=CROP):
  """The paper's training crop: shorter side S ~ U[min_side, max_side],
  a random size x size crop of that, flipped half the time."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  h, w = image_shape(jpeg)
  side = tf.random.stateless_uniform(
    [], seeds[0], min_side, max_side + 1, dtype=tf.int32
  )
  scale = tf.cast(side, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
  # The crop, in original pixels: at least one pixel, at most the image.
  crop = tf.cast(tf.round(size / scale), tf.int32)
  crop_h, crop_w = tf.minimum(crop, h), tf.minimum(crop, w)
  top = tf.random.stateless_uniform(
    [], seeds[1], 0, h - crop_h + 1, dtype=tf.int32
  )
  left = tf.random.stateless_uniform(
    [], seeds[2], 0, w - crop_w + 1, dtype=tf.int32
  )
  image = decode_window(jpeg, top, left, crop_h, crop_w, size, antialias=False)
  return tf.image.stateless_random_flip_left_right(image, seeds[3])


def inception_crop(
  jpeg, seed, size=CROP, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
):
  """Szegedy et al.'s random-resized crop (8-100% of the area, aspect
  3/4-4/3), flipped half the time: the now-common switch, drawn by
  TensorFlow's sampler as the TensorFlow references do (a mean area of
  about 37%; torchvision draws the area uniformly, 54%), the whole image
  when 10 draws do not fit. `min_object_covered=0`: TensorFlow's default
  of 0.1 keeps every crop above 10% of the image, not 8%."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  shape = tf.stack([*image_shape(jpeg), 3])
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    tf.zeros([0, 0, 4]),
    seed=seeds[0],
    min_object_covered=0.0,
    area_range=area,
    aspect_ratio_range=ratio,
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  image = decode_window(
    jpeg, begin[0], begin[1], crop_size[0], crop_size[1], size, antialias=False
  )
  return tf.image.stateless_random_flip_left_right(image, seeds[1])


def resize_shorter(image, side):
  """Resizes a decoded image so that its shorter side is `side`."""
  h, w = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
  scale = tf.cast(side, tf.float32) / tf.minimum(h, w)
  new = tf.cast(tf.round(tf.stack([h, w]) * scale), tf.int32)
  image = tf.image.resize(image, new, method='bilinear', antialias=True)
  return to_uint8(image)


def center_crop(jpeg, side=TEN_CROP_SIDE, size=CROP):
  """Shorter side to `side`, the centre size x size: (size, size, 3)."""
  h, w = image_shape(jpeg)
  scale = tf.cast(side, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
  crop = tf.cast(tf.round(size / scale), tf.int32)
  crop_h, crop_w = tf.minimum(crop, h), tf.minimum(crop, w)
  return decode_window(
    jpeg, (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w, size
  )


def ten_crops(jpeg, side=TEN_CROP_SIDE, size=CROP):
  """The four corners and the centre of the image resized to shorter side
  `side`, and their flips: (10, size, size, 3)."""
  image = resize_shorter(decode(jpeg), side)
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  corners = [
    (0, 0),
    (0, w - size),
    (h - size, 0),
    (h - size, w - size),
    ((h - size) // 2, (w - size) // 2),
  ]
  crops = [image[top : top + size, left : left + size] for top, left in corners]
  crops += [c[:, ::-1] for c in crops]
  return tf.stack(crops)


def multiscale(jpeg, side, multiple=32):
  """The whole image at shorter side `side` (fully convolutional test) and
  its flip: (2, H, W, 3). The longer side is rounded to a multiple of
  `multiple` (an aspect change under 3% at 640) so that few shapes, and so
  few compilations, cover the whole validation set."""
  image = decode(jpeg)
  h, w = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
  scale = tf.cast(side, tf.float32) / tf.minimum(h, w)
  longer = (
    tf.cast(tf.round(tf.maximum(h, w) * scale / multiple), tf.int32) * multiple
  )
  longer = tf.maximum(longer, side)
  new = tf.where(h <= w, tf.stack([side, longer]), tf.stack([longer, side]))
  image = tf.image.resize(image, new, method='bilinear', antialias=True)
  image = to_uint8(image)
  return tf.stack([image, image[:, ::-1]])
