"""Fine-tuning from another run's checkpoint, and predictions.

The source is a CIFAR ResNet-8 trained briefly on the bundled sample; the
new task is a two-class image folder of real CIFAR pictures (airplane,
frog) saved as JPEGs, laid out as a user's own images are.
"""

import json

import jax
import numpy as np
import pytest

from resnet_jax.data import cifar
from resnet_jax.errors import ConfigError
from resnet_jax.eval import predict
from resnet_jax.run import saved_config
from resnet_jax.train import finetune
from resnet_jax.train import loop
from resnet_jax.train import optim
from resnet_jax.train import saved_state
from tests.helpers import REPO
from tests.helpers import SAMPLE
from tests.helpers import few_devices
from tests.helpers import load_config
from tests.helpers import run_cli

CLASSES = {'airplane': 0, 'frog': 6}


def image_folder(root, per_class=(60, 30), encode='jpeg'):
  """ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg from the bundled
  CIFAR sample: different pictures in each split."""
  import tensorflow as tf

  train, _ = cifar.load_local(str(SAMPLE), 'cifar10', 10)
  for name, label in CLASSES.items():
    chosen = np.flatnonzero(train.labels == label)
    for split, picks in (
      ('train', chosen[: per_class[0]]),
      ('val', chosen[per_class[0] : sum(per_class)]),
    ):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in picks:
        data = tf.io.encode_jpeg(train.images[i], quality=95).numpy()
        (folder / f'{i}.jpg').write_bytes(data)
  return root


def probe_config(source, folder, mode='linear_probe', steps=40):
  config = load_config(f'configs/finetune.py:resnet8,family=cifar,mode={mode}')
  config.finetune.init_from = str(source)
  config.data.image_folder = str(folder)
  config.data.num_classes = 2
  t = config.train
  t.unit, t.length, t.batch_size, t.eval_batch_size = 'steps', steps, 24, 32
  t.log_every, t.eval_every, t.checkpoint_every = 4, steps, steps
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(source workdir, image folder, linear-probe workdir)."""
  root = tmp_path_factory.mktemp('finetune')
  config = load_config('configs/cifar10.py:resnet8')
  config.data.local_dir = str(SAMPLE)
  config.data.eval_on = 'none'
  t = config.train
  t.length, t.batch_size, t.log_every, t.checkpoint_every = 30, 64, 10, 30
  loop.train_and_evaluate(config, str(root / 'source'))
  folder = image_folder(root / 'images')
  loop.train_and_evaluate(
    probe_config(root / 'source', folder), str(root / 'probe')
  )
  return root / 'source', folder, root / 'probe'


def test_linear_probe_on_an_image_folder_learns(runs):
  source_dir, _, probe_dir = runs
  _, _, source = saved_state.load(str(source_dir))
  config, _, probe = saved_state.load(str(probe_dir))
  # Frozen: every backbone weight and BN statistic is the source's.
  for tree in ('params', 'batch_stats'):
    ours, theirs = getattr(probe, tree), getattr(source, tree)
    for name in theirs:
      if name != 'head':
        jax.tree.map(np.testing.assert_array_equal, ours[name], theirs[name])
  assert probe.params['head']['kernel'].shape == (64, 2)  # the new head
  np.testing.assert_array_equal(probe.pixel_mean, source.pixel_mean)
  assert config.data.mean == 'pixel'  # the source's normalisation
  # It learns: held-out pictures mostly right (chance is 50%), with a
  # loss well under ln 2, the best a head that learned nothing can do.
  records = [json.loads(line) for line in (probe_dir / 'metrics.jsonl').open()]
  val = [r for r in records if r['kind'] == 'val'][-1]
  assert val['num_examples'] == 60 and val['top1_accuracy'] >= 0.7
  assert val['loss'] < 0.6
  assert json.loads((probe_dir / 'classes.json').read_text()) == [
    'airplane',
    'frog',
  ]


def test_full_finetuning_gives_the_backbone_a_smaller_learning_rate():
  def updates(mode):
    config = load_config(
      f'configs/finetune.py:resnet8,family=cifar,mode={mode}'
    )
    params = {
      'head': {'kernel': np.ones(3)},
      'conv_init': {'kernel': np.ones(3)},
    }
    tx, _ = optim.optimizer(config, params, steps_per_epoch=10)
    grads = jax.tree.map(np.ones_like, params)
    state = tx.init(params)
    return tx.update(grads, state, params)

  full, _ = updates('full')
  np.testing.assert_allclose(
    full['conv_init']['kernel'], 0.1 * full['head']['kernel'], rtol=1e-6
  )
  assert np.all(full['head']['kernel'] < 0)
  probe, state = updates('linear_probe')
  assert np.all(probe['conv_init']['kernel'] == 0)
  assert np.all(probe['head']['kernel'] < 0)
  sizes = [np.size(x) for x in jax.tree.leaves(state)]
  assert sum(sizes) == 3 + 1  # the head's momentum, the schedule's count


def test_a_source_that_does_not_fit_is_refused_before_training(runs, tmp_path):
  source_dir, folder, _ = runs
  config = probe_config(source_dir, folder)
  config.model.depth = 20
  with pytest.raises(ConfigError, match='family=cifar'):
    loop.train_and_evaluate(config, str(tmp_path / 'a'))
  for change, match in (
    (dict(init_from=None), 'finetune.init_from=DIR is required'),
    (dict(init_from=str(tmp_path)), 'config.json not found'),
    (dict(mode='probe'), 'is not one of full, linear_probe'),
  ):
    config = probe_config(source_dir, folder)
    config.finetune.update(change)
    with pytest.raises(ConfigError, match=match):
      loop.train_and_evaluate(config, str(tmp_path / 'b'))
  config = probe_config(source_dir, folder)
  config.data.image_size = 48  # the source's mean is per pixel, 32x32
  with pytest.raises(ConfigError, match='data.image_size=32'):
    finetune.inherit(config)
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()


def test_predict_images_and_prepared_batches_agree(runs, tmp_path):
  _, folder, probe_dir = runs
  files = sorted(str(p) for p in (folder / 'val').glob('*/*.jpg'))[::15]
  records = predict.predict(str(probe_dir), files, batch_size=3)
  assert [r['file'] for r in records] == files
  for r in records:
    assert r['top5'] in ([0, 1], [1, 0])  # two classes: both, best first
    assert r['names'] == [['airplane', 'frog'][i] for i in r['top5']]
    assert r['probabilities'][0] >= r['probabilities'][1]
    assert sum(r['probabilities']) == pytest.approx(1, abs=1e-5)
  # The same pictures, prepared as evaluation does, as a .npy batch: the
  # raw logits give the same probabilities.
  config, _, state = saved_state.load(str(probe_dir))
  batch = predict.prepare_images(config, files, state.pixel_mean)
  np.save(tmp_path / 'batch.npy', batch)
  logits = predict.predict(str(probe_dir), [str(tmp_path / 'batch.npy')])
  assert [r['index'] for r in logits] == list(range(len(files)))
  for r, raw in zip(records, logits):
    probs = np.asarray(jax.nn.softmax(np.asarray(raw['logits'])))
    np.testing.assert_allclose(probs[r['top5']], r['probabilities'], atol=2e-6)


def test_predict_rejects_bad_files(runs, tmp_path):
  _, _, probe_dir = runs
  (tmp_path / 'notes.jpg').write_text('not an image')
  np.save(tmp_path / 'ints.npy', np.zeros((2, 32, 32, 3), np.uint8))
  np.save(tmp_path / 'flat.npy', np.zeros((32, 32, 3), np.float32))
  for name, match in (
    ('missing.jpg', 'no such file'),
    ('notes.jpg', 'notes.jpg is not a readable image'),
    ('ints.npy', 'expected a float32 batch'),
    ('flat.npy', 'expected a float32 batch'),
  ):
    with pytest.raises(ConfigError, match=match):
      predict.predict(str(probe_dir), [str(tmp_path / name)])
  jpeg = str(next((REPO / 'data' / 'imagenet-sample').glob('train/*/*')))
  with pytest.raises(ConfigError, match='keeps no moving average'):
    predict.predict(str(probe_dir), [jpeg], weights='ema')


def test_predict_cli_prints_one_json_line_per_image(runs):
  _, folder, probe_dir = runs
  files = sorted(str(p) for p in (folder / 'val' / 'frog').glob('*.jpg'))[:2]
  result = run_cli('-m', 'resnet_jax.predict', f'--workdir={probe_dir}', *files)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [json.loads(x) for x in result.stdout.splitlines()]
  assert [x['file'] for x in lines] == files
  result = run_cli('-m', 'resnet_jax.predict', f'--workdir={probe_dir}')
  assert result.returncode == 2
  assert result.stderr.strip().endswith(
    'no files: give image files or .npy batches'
  )


def test_any_tfds_image_dataset_streams_with_held_out_training_slices(
  tmp_path,
):
  """A tfds dataset other than ImageNet, prepared locally (as tfds
  prepares any download), with PNG images and no validation split: the
  split keys take tfds slices of its training data."""
  from resnet_jax.data import image_sets
  from resnet_jax.data import splits
  from tests.helpers import prepare_tfds

  train, _ = cifar.load_local(str(SAMPLE), 'cifar10', 10)
  chosen = np.concatenate(
    [np.flatnonzero(train.labels == c)[:20] for c in CLASSES.values()]
  )
  labels = [list(CLASSES.values()).index(y) for y in train.labels[chosen]]
  prepare_tfds(
    tmp_path, 'two_cifar_classes', train.images[chosen], labels, CLASSES
  )
  config = probe_config('unused', None)
  d = config.data
  d.name, d.tfds_data_dir = 'two_cifar_classes', str(tmp_path)
  d.image_folder = None
  d.train_split, d.val_split = 'train[:75%]', 'train[75%:]'
  _, count, names = splits.source(d, 'train').records()
  assert (count, names) == (30, ['airplane', 'frog'])
  assert splits.source(d, 'val').records()[1] == 10
  images, labels = next(
    image_sets.train_dataset(d, 8, seed=0).as_numpy_iterator()
  )
  assert images.shape == (8, 32, 32, 3) and images.dtype == np.uint8
  assert set(labels) <= {0, 1} and images.std() > 10  # real pictures
  views, _, mask = next(
    image_sets.eval_dataset(d, 'val', 16, 'center').as_numpy_iterator()
  )
  assert views.shape == (16, 1, 32, 32, 3) and mask.sum() == 10
  d.val_split = 'validation'
  with pytest.raises(ConfigError, match="no split 'validation'.*train"):
    splits.source(d, 'val').records()
  d.name = 'no_such_dataset'
  with pytest.raises(ConfigError, match='neither a tfds dataset'):
    splits.source(d, 'train').records()


def test_finetuning_starts_from_imported_torchvision_weights(tmp_path):
  """resnet_jax.convert's workdir -> a linear probe on an image folder of
  real ImageNet JPEGs -> predictions with the folder's class names. The
  torchvision normalisation travels with the weights."""
  from resnet_jax.model import resnet
  from resnet_jax.model import torch_convert
  from resnet_jax.train import torchvision_io

  imagenet = load_config('configs/imagenet.py:resnet18,shortcut=B')
  imagenet.data.image_size = 32
  model = resnet.build(imagenet.model, 1000)
  variables = jax.device_get(  # weights that are not ours: seed 1
    jax.jit(model.init)(jax.random.key(1), np.zeros((1, 32, 32, 3)))
  )
  tensors, _ = torch_convert.export_state_dict(
    variables, np.zeros((1, 1, 3), np.float32)
  )
  torch_convert.write(str(tmp_path / 'r18.safetensors'), tensors)
  imported = tmp_path / 'imported'
  torchvision_io.import_checkpoint(
    imagenet, str(tmp_path / 'r18.safetensors'), str(imported)
  )
  # Predictions from the import itself are named by tfds' ImageNet labels.
  names = predict.class_names(saved_config.read(str(imported)), imported)
  assert len(names) == 1000 and names[0] == 'n01440764'
  classes = sorted((REPO / 'data/imagenet-sample/train').iterdir())[:8]
  for wnid in classes:
    (tmp_path / 'images/train').mkdir(parents=True, exist_ok=True)
    (tmp_path / 'images/train' / wnid.name).symlink_to(wnid)
  config = load_config(
    'configs/finetune.py:resnet18,shortcut=B,mode=linear_probe'
  )
  config.finetune.init_from = str(imported)
  config.data.image_folder = str(tmp_path / 'images')
  config.data.num_classes, config.data.image_size = 8, 32
  config.data.eval_on = 'none'
  t = config.train
  t.unit, t.length, t.batch_size, t.log_every, t.checkpoint_every = (
    'steps',
    2,
    8,
    1,
    2,
  )
  loop.train_and_evaluate(config, str(tmp_path / 'probe'), few_devices())
  probe_config, _, probe = saved_state.load(str(tmp_path / 'probe'))
  mean, scale = torch_convert.input_normalisation()
  assert probe_config.data.mean == 'channel'
  np.testing.assert_allclose(probe_config.model.input_scale, scale)
  np.testing.assert_allclose(probe.pixel_mean, mean)
  np.testing.assert_array_equal(
    probe.params['stage4_block1']['conv1']['kernel'],
    variables['params']['stage4_block1']['conv1']['kernel'],
  )
  assert probe.params['head']['kernel'].shape == (512, 8)
  jpeg = str(next(classes[3].iterdir()))
  (record,) = predict.predict(str(tmp_path / 'probe'), [jpeg])
  assert len(record['top5']) == 5
  assert set(record['names']) <= {c.name for c in classes}
