"""tfds datasets as image sets: the builder of data.name (prepared where
it is not, checked to be an image classification dataset), the size of
a split, and its records, undecoded (the pipelines: image_sets.py)."""

import os

from resnet_jax.data import tf_cpu
from resnet_jax.errors import ConfigError


def builder_of(data_cfg, features=('image', 'label')):
  """tfds dataset data.name, prepared (imagenet2012 from the official
  archives in tfds' manual folder; others downloaded by tfds when first
  used), and checked to have `features` (an image classification
  dataset's)."""
  tf = tf_cpu.tensorflow()
  tfds = tf_cpu.datasets()

  name = data_cfg.name
  try:
    builder = tfds.builder(name, data_dir=data_cfg.tfds_data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(
      f'data.name={name!r} is neither a tfds dataset nor prepared in '
      f'{data_cfg.tfds_data_dir or "$TFDS_DATA_DIR"}; or set '
      'data.image_folder=DIR'
    ) from e
  if not tf.io.gfile.exists(
    os.path.join(builder.data_dir, 'dataset_info.json')
  ):
    _prepare(builder, data_cfg)
  has = builder.info.features
  if any(f not in has for f in features):
    raise ConfigError(
      f'tfds {name} has features {", ".join(has)}; expected '
      + ', '.join(features)
    )
  return builder


def split_of(builder, data_cfg, split: str) -> tuple[str, int]:
  """(tfds split name, its number of examples) for 'train' or 'val'."""
  tfds_split = data_cfg.train_split if split == 'train' else data_cfg.val_split
  try:
    return tfds_split, builder.info.splits[tfds_split].num_examples
  except (KeyError, ValueError, AssertionError) as e:
    raise ConfigError(
      f'tfds {data_cfg.name} has no split {tfds_split!r} (its splits: '
      f'{", ".join(builder.info.splits)}; slices such as train[:90%] and '
      'train[90%:] hold out part of the training data)'
    ) from e


def records(builder, split: str, label: str = 'label', **kwargs):
  """(encoded image, int32 label) records of a tfds split, undecoded;
  the label from feature `label`."""
  tf = tf_cpu.tensorflow()
  tfds = tf_cpu.datasets()

  ds = builder.as_dataset(
    split=split, decoders={'image': tfds.decode.SkipDecoding()}, **kwargs
  )
  return ds.map(lambda x: (x['image'], tf.cast(x[label], tf.int32)))


def dataset(data_cfg, split: str):
  """(tf.data of (encoded image, label) in the order stored, examples,
  class names) of tfds dataset data.name; split 'train' or 'val' read as
  data.train_split or data.val_split."""
  builder = builder_of(data_cfg)
  tfds_split, examples = split_of(builder, data_cfg, split)
  ds = records(builder, tfds_split, shuffle_files=False)
  return ds, examples, builder.info.features['label'].names


def _prepare(builder, data_cfg):
  """Downloads and prepares a tfds dataset (ImageNet: from the manual
  folder, which must hold the official archives)."""
  tfds = tf_cpu.datasets()

  manual = data_cfg.manual_dir or os.path.join(
    data_cfg.tfds_data_dir or os.path.expanduser('~/tensorflow_datasets'),
    'downloads',
    'manual',
  )
  if data_cfg.name == 'imagenet2012' and not os.path.isdir(manual):
    raise ConfigError(
      f'imagenet2012 is not prepared in {builder.data_dir} and the '
      f'manual folder {manual} does not exist: put ILSVRC2012_img_train'
      ".tar and ILSVRC2012_img_val.tar there (tfds' manual download), "
      'or use --config.data.image_folder=DIR'
    )
  try:
    builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual)
    )
  except Exception as e:  # offline: errors surface deep inside tfds
    first = (str(e).strip().splitlines() or [''])[0][:200]
    raise ConfigError(
      f'could not prepare tfds {data_cfg.name} in {builder.data_dir} '
      f'({type(e).__name__}: {first}); prepare it on a networked machine '
      'and set data.tfds_data_dir, or use data.image_folder=DIR'
    ) from e
