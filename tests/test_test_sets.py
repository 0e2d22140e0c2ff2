"""ImageNet-V2 and ReaL: a run evaluated on them, from files in their
released layouts and from tensorflow-datasets, against its own val."""

import json
import shutil

import numpy as np
import pytest

from resnet_jax.data import image_sets
from resnet_jax.data import test_sets
from resnet_jax.errors import ConfigError
from resnet_jax.eval import saved_run
from resnet_jax.run import saved
from tests.test_image_sets import FOLDER
from tests.test_image_sets import WNIDS
from tests.test_image_sets import imagenet_train_config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A one-step image-folder run (40 classes, 32x32) whose val/ is the
  40 bundled images, and that val/'s files in listing order."""
  from resnet_jax.train import loop

  root = tmp_path_factory.mktemp('data') / 'folder'
  shutil.copytree(FOLDER / 'train', root / 'train')
  shutil.copytree(FOLDER / 'train', root / 'val')
  config = imagenet_train_config(root, length=1)
  config.data.eval_on = 'none'
  config.train.checkpoint_every = 1
  workdir = tmp_path_factory.mktemp('run')
  loop.train_and_evaluate(config, str(workdir))
  return root, str(workdir), image_sets.list_image_folder(str(root), 'val')


def evaluate(workdir, test_set=None, **data):
  config = saved.saved_config(workdir)
  config.data.update(data)
  return saved_run.evaluate_workdir(config, workdir, test_set=test_set)


def assert_same_counts(a, b):
  for key in ('top1_accuracy', 'top5_accuracy', 'num_examples'):
    assert a[key] == b[key], key
  assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)


def test_imagenet_v2_folder_is_labelled_by_class_index(run, tmp_path):
  root, workdir, val = run
  v2 = tmp_path / 'imagenetv2-matched-frequency-format-val'
  for index, wnid in enumerate(WNIDS):  # folders 0..39, not wnids
    (v2 / str(index)).mkdir(parents=True)
    for jpeg in (root / 'val' / wnid).iterdir():
      shutil.copy(jpeg, v2 / str(index) / f'{jpeg.stem}.jpeg')
  listing = test_sets.numbered_folder(str(v2))
  # '10' sorts before '2' as text: the label is the number itself.
  for path, label in zip(listing.paths, listing.labels):
    assert path.split('/')[-2] == str(label)
  ours = evaluate(workdir, test_sets.TestSet('imagenet_v2', str(v2)))
  assert ours['test_set'] == 'imagenet_v2'
  assert_same_counts(ours, evaluate(workdir))  # the same images, relabelled


def _real_folder(root, val, tmp_path):
  """val/ with the validation images' names, ILSVRC2012_val_<n>.JPEG."""
  real_root = tmp_path / 'real_root'
  for n, (path, label) in enumerate(zip(val.paths, val.labels)):
    folder = real_root / 'val' / WNIDS[label]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder / f'ILSVRC2012_val_{n + 1:08d}.JPEG')
  return real_root


def test_real_labels_count_a_prediction_in_the_set(run, tmp_path):
  root, workdir, val = run
  real_root = _real_folder(root, val, tmp_path)
  labels = [int(label) for label in val.labels]

  def real(sets):
    path = tmp_path / f'real{len(list(tmp_path.glob("real*.json")))}.json'
    path.write_text(json.dumps(sets))
    return evaluate(
      workdir, test_sets.TestSet('real', str(path)), image_folder=str(real_root)
    )

  single = real([[label] for label in labels])
  assert_same_counts(single, evaluate(workdir))  # one label: val's metrics
  # 10 images without labels (left out); of those, 5 get every class (a
  # sure hit) in a second file.
  rest = real([[]] * 10 + [[label] for label in labels[10:]])
  mixed = real(
    [[]] * 5 + [list(range(40))] * 5 + [[label] for label in labels[10:]]
  )
  assert rest['num_examples'] == 30 and mixed['num_examples'] == 35
  for key in ('top1_accuracy', 'top5_accuracy'):
    assert mixed[key] == pytest.approx((30 * rest[key] + 5) / 35)
  # The loss: -log of the set's probability, 0 for the whole set.
  assert mixed['loss'] == pytest.approx(30 * rest['loss'] / 35, rel=1e-5)


def _prepare(module, data_dir, split, examples, config=None):
  """A registered tfds builder prepared from local examples (no download)."""

  from etils import epath

  class Local(module.Builder, skip_registration=True):
    pkg_dir_path = epath.Path(data_dir)  # no package of metadata files

    def _split_generators(self, dl_manager):
      return {split: iter(examples)}

  Local.name = module.Builder.name
  Local(config=config, data_dir=str(data_dir)).download_and_prepare()


def test_tfds_sources_read_as_their_builders_store_them(run, tmp_path):
  from tensorflow_datasets.datasets.imagenet2012_real import (
    imagenet2012_real_dataset_builder as real_builder,
  )
  from tensorflow_datasets.datasets.imagenet_v2 import (
    imagenet_v2_dataset_builder as v2_builder,
  )

  _, workdir, val = run
  files = list(zip(val.paths, [int(label) for label in val.labels]))
  _prepare(
    v2_builder,
    tmp_path,
    'test',
    [
      (str(i), dict(image=p, label=y, file_name=f'{y}/{i}.jpeg'))
      for i, (p, y) in enumerate(files)
    ],
    config='matched-frequency',
  )
  _prepare(
    real_builder,
    tmp_path,
    'validation',
    [
      (
        str(i),
        dict(
          image=p,
          original_label=y,
          real_label=[] if i < 4 else [y],
          file_name=f'ILSVRC2012_val_{i + 1:08d}.JPEG',
        ),
      )
      for i, (p, y) in enumerate(files)
    ],
  )
  own = evaluate(workdir)
  v2 = evaluate(
    workdir, test_sets.TestSet('imagenet_v2'), tfds_data_dir=str(tmp_path)
  )
  assert_same_counts(v2, own)
  real = evaluate(
    workdir, test_sets.TestSet('real'), tfds_data_dir=str(tmp_path)
  )
  assert real['num_examples'] == 36 and real['test_set'] == 'real'


def test_test_sets_refuse_what_they_cannot_read(run, tmp_path):
  root, workdir, val = run
  with pytest.raises(ConfigError, match='is not one of imagenet_v2, real'):
    evaluate(workdir, test_sets.TestSet('imagenet_v3'))
  with pytest.raises(ConfigError, match='no such file or folder'):
    evaluate(
      workdir, test_sets.TestSet('imagenet_v2', str(tmp_path / 'nowhere'))
    )
  with pytest.raises(ConfigError, match='named by class index'):
    evaluate(workdir, test_sets.TestSet('imagenet_v2', str(root / 'val')))
  bad = tmp_path / 'real.json'
  bad.write_text(json.dumps([[45]] * 40))
  real_root = _real_folder(root, val, tmp_path)
  with pytest.raises(ConfigError, match='holds class 45; this run has'):
    evaluate(
      workdir, test_sets.TestSet('real', str(bad)), image_folder=str(real_root)
    )
  with pytest.raises(ConfigError, match='by their number'):
    evaluate(
      workdir, test_sets.TestSet('real', str(bad))
    )  # val/ named otherwise
  np.testing.assert_array_equal(
    test_sets.real_label_sets(str(bad), ['x/ILSVRC2012_val_00000002.JPEG']),
    [[45]],
  )
