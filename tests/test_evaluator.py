"""ImageNet evaluation protocols on the bundled real JPEGs: the
centre crop, the paper's 10 crops and its multi-scale test average the
right views and count every image once, in one process or several; and
the other test sets (ImageNet-V2, ReaL; data/imagenet_variants.py). The network
is test_image_sets's ResNet-8 at 32x32.
"""

import functools
import json
import shutil

import jax
import numpy as np
import pytest

from resnet_jax.data import image_listing
from resnet_jax.data import image_ops
from resnet_jax.data import image_sets
from resnet_jax.data import imagenet_variants
from resnet_jax.errors import ConfigError
from resnet_jax.eval import bn_stats
from resnet_jax.eval import eval_steps
from resnet_jax.eval import evaluator
from resnet_jax.eval import saved_run
from resnet_jax.run import saved_config
from resnet_jax.train import loop
from tests.helpers import few_devices
from tests.test_image_sets import FOLDER
from tests.test_image_sets import WNIDS
from tests.test_image_sets import imagenet_train_config
from tests.test_parallel import start_two_processes


def small_config(root, **data):
  config = imagenet_train_config(root, length=2)
  config.data.update(data)
  config.train.update(eval_every=2)
  return config


@pytest.fixture(scope='module')
def experiment():
  """Initial weights with BN statistics of the images themselves: scores
  spread out, not saturated (ties would make top-k ambiguous)."""
  exp = loop.setup(small_config(FOLDER))
  state = loop.initial_state(exp)
  mean = np.asarray(state.pixel_mean)
  ds = image_sets.eval_dataset(exp.config.data, 'train', 40, 'center')
  batches = (
    v[:, 0].astype(np.float32) - mean for v, *_ in ds.as_numpy_iterator()
  )
  return exp, bn_stats.recompute(state, exp.model, batches)


def reference(exp, state, protocol):
  """Each image alone: softmax averaged over its views, one call each."""
  d = exp.config.data
  listing = image_listing.list_image_folder(d.image_folder, 'train')
  paths, labels = listing.paths, listing.labels
  side = round(d.image_size * 256 / 224)
  views = {
    'center': lambda j: [image_ops.center_crop(j, side, d.image_size)[None]],
    'ten_crop': lambda j: [image_ops.ten_crops(j, side, d.image_size)],
    'multiscale': lambda j: [image_ops.multiscale(j, s) for s in d.eval_scales],
  }[protocol]
  probs = []
  apply = jax.jit(
    functools.partial(eval_steps.view_probabilities, model=exp.model)
  )
  for path in paths:
    with open(path, 'rb') as f:
      jpeg = f.read()
    per_view_set = [apply(state, v.numpy()[None]) for v in views(jpeg)]
    probs.append(np.mean(per_view_set, axis=0)[0])
  probs = np.asarray(probs)
  top5 = np.argsort(-probs, axis=1)[:, :5]
  return dict(
    top1_accuracy=np.mean(top5[:, 0] == labels),
    top5_accuracy=np.mean((top5 == labels[:, None]).any(1)),
    loss=np.mean(-np.log(probs[np.arange(len(labels)), labels])),
    num_examples=len(labels),
  )


@pytest.mark.parametrize('protocol', ['center', 'ten_crop', 'multiscale'])
def test_protocol_equals_each_image_evaluated_alone(experiment, protocol):
  exp, state = experiment
  evaluation = evaluator.ImageSetEvaluator(
    exp.config.data,
    model=exp.model,
    batch_size=16,  # 40 images: the last batch (or shape group) is padded
    protocol=protocol,
    split='train',
  )
  got, want = evaluation(state), reference(exp, state, protocol)
  assert got['num_examples'] == want['num_examples'] == 40
  for key in ('top1_accuracy', 'top5_accuracy', 'loss'):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-4, err_msg=key)


def test_protocols_differ(experiment):
  """The 10 crops and the scales are really used: not the centre crop."""
  exp, state = experiment
  losses = {
    p: evaluator.ImageSetEvaluator(
      exp.config.data, model=exp.model, batch_size=16, protocol=p, split='train'
    )(state)['loss']
    for p in image_sets.PROTOCOLS
  }
  assert len({round(v, 6) for v in losses.values()}) == 3, losses


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A two-step run on the bundled images, whose val/ is the same 40
  images and one copy (41); evaluation only reads it."""
  root = tmp_path_factory.mktemp('data') / 'folder'
  shutil.copytree(FOLDER, root)
  shutil.copytree(root / 'train', root / 'val')
  first = next((root / 'val' / 'n01440764').glob('*.JPEG'))
  shutil.copy(first, first.with_name('copy.JPEG'))
  workdir = tmp_path_factory.mktemp('run')
  config = small_config(root, eval_on='none')
  loop.train_and_evaluate(config, str(workdir), few_devices())
  return root, workdir


def test_evaluate_cli_two_processes_count_uneven_shards_once(trained):
  """41 validation images over 2 processes (21 and 20, so unequal numbers
  of batches): both processes finish and the result equals one process's.
  Then BN re-estimation and the centre crop from the CLI."""
  _, workdir = trained
  flags = [
    '--config.data.eval_protocol=multiscale',
    '--config.train.eval_batch_size=4',
  ]

  two = start_two_processes(
    flags, workdir, command=('-m', 'resnet_jax.evaluate')
  )
  outputs = [p.communicate(timeout=300) for p in two]
  for p, (_, stderr) in zip(two, outputs):
    assert p.returncode == 0, stderr[-3000:]
  results = [json.loads(o.splitlines()[-1]) for o, _ in outputs]
  # One process, in-process on its 8 devices, in batches of 16 (the sums
  # do not depend on how the images are batched; 16 as in
  # test_protocol_equals_each_image_evaluated_alone, whose compiled
  # programs, one per image shape, the cache then serves).
  config = saved_config.read(str(workdir))
  config.data.eval_protocol = 'multiscale'
  config.train.eval_batch_size = 16
  single = saved_run.evaluate_workdir(config, str(workdir))
  assert results[0] == results[1]
  assert single['num_examples'] == results[0]['num_examples'] == 41
  assert single['protocol'] == 'multiscale' and single['step'] == 2
  np.testing.assert_allclose(results[0]['loss'], single['loss'], rtol=1e-5)

  reestimated = saved_run.evaluate_workdir(
    saved_config.read(str(workdir)), str(workdir), recompute_bn_batches=2
  )
  assert reestimated['protocol'] == 'center'
  assert reestimated['num_examples'] == 41
  assert np.isfinite(reestimated['loss'])


def test_benchmark_times_the_streaming_loop_and_bare_step():
  """The benchmark on an ImageNet config whose durations are in epochs:
  it runs the loop for a few steps and the step on one resident batch."""
  from resnet_jax.train import benchmark

  config = small_config(FOLDER, eval_on='none')
  config.train.update(unit='epochs', length=90, log_every=0.02)
  assert benchmark.step_report(config, 2, 1)['step_images_per_sec'] > 0
  assert benchmark.loop_images_per_sec(config, 4, 1) > 0


def test_synthetic_benchmark_reads_no_data(tmp_path):
  """--synthetic (the lent GPUs have no TensorFlow): the step on a random
  batch, with a data folder that does not exist; it is the real step, so
  the loss on that one batch goes down."""
  from resnet_jax.data import inputs
  from resnet_jax.train import benchmark

  config = small_config(str(tmp_path / 'missing'), eval_on='none')
  config.optim.lr = 0.01
  assert (
    benchmark.step_report(config, 2, 1, synthetic=True)['step_images_per_sec']
    > 0
  )
  exp = loop.setup(config, data=inputs.Synthetic(config))
  assert exp.steps_per_epoch == 1_281_167 // config.train.batch_size
  step = loop.train_fn(exp, 0)
  state = loop.initial_state(exp)
  losses = []
  for _ in range(4):
    state, metrics = step(state)
    losses.append(float(metrics['loss']))
  assert losses[-1] < losses[0]


# ImageNet-V2 and ReaL: the trained run evaluated on them, from files in
# their released layouts and from tensorflow-datasets, against its val.


def _with_val(trained):
  root, workdir = trained
  return root, str(workdir), image_listing.list_image_folder(str(root), 'val')


def evaluate(workdir, test_set=None, **data):
  config = saved_config.read(workdir)
  config.data.update(data)
  return saved_run.evaluate_workdir(config, workdir, test_set=test_set)


def assert_same_counts(a, b):
  for key in ('top1_accuracy', 'top5_accuracy', 'num_examples'):
    assert a[key] == b[key], key
  assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)


def test_imagenet_v2_folder_is_labelled_by_class_index(trained, tmp_path):
  root, workdir, val = _with_val(trained)
  v2 = tmp_path / 'imagenetv2-matched-frequency-format-val'
  for index, wnid in enumerate(WNIDS):  # folders 0..39, not wnids
    (v2 / str(index)).mkdir(parents=True)
    for jpeg in (root / 'val' / wnid).iterdir():
      shutil.copy(jpeg, v2 / str(index) / f'{jpeg.stem}.jpeg')
  listing = imagenet_variants.numbered_folder(str(v2))
  # '10' sorts before '2' as text: the label is the number itself.
  for path, label in zip(listing.paths, listing.labels):
    assert path.split('/')[-2] == str(label)
  ours = evaluate(workdir, imagenet_variants.TestSet('imagenet_v2', str(v2)))
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


def test_real_labels_count_a_prediction_in_the_set(trained, tmp_path):
  root, workdir, val = _with_val(trained)
  real_root = _real_folder(root, val, tmp_path)
  labels = [int(label) for label in val.labels]

  def real(sets):
    path = tmp_path / f'real{len(list(tmp_path.glob("real*.json")))}.json'
    path.write_text(json.dumps(sets))
    return evaluate(
      workdir,
      imagenet_variants.TestSet('real', str(path)),
      image_folder=str(real_root),
    )

  single = real([[label] for label in labels])
  assert_same_counts(single, evaluate(workdir))  # one label: val's metrics
  # 10 images without labels (left out); of those, 5 get every class (a
  # sure hit) in a second file.
  rest = real([[]] * 10 + [[label] for label in labels[10:]])
  mixed = real(
    [[]] * 5 + [list(range(40))] * 5 + [[label] for label in labels[10:]]
  )
  assert rest['num_examples'] == 31 and mixed['num_examples'] == 36
  for key in ('top1_accuracy', 'top5_accuracy'):
    assert mixed[key] == pytest.approx((31 * rest[key] + 5) / 36)
  # The loss: -log of the set's probability, 0 for the whole set.
  assert mixed['loss'] == pytest.approx(31 * rest['loss'] / 36, rel=1e-5)


def _prepare(module, data_dir, split, examples, config=None):
  """A registered tfds builder prepared from local examples (no download)."""

  from etils import epath

  class Local(module.Builder, skip_registration=True):
    pkg_dir_path = epath.Path(data_dir)  # no package of metadata files

    def _split_generators(self, dl_manager):
      return {split: iter(examples)}

  Local.name = module.Builder.name
  Local(config=config, data_dir=str(data_dir)).download_and_prepare()


def test_tfds_sources_read_as_their_builders_store_them(trained, tmp_path):
  from tensorflow_datasets.datasets.imagenet2012_real import (
    imagenet2012_real_dataset_builder as real_builder,
  )
  from tensorflow_datasets.datasets.imagenet_v2 import (
    imagenet_v2_dataset_builder as v2_builder,
  )

  root, workdir, val = _with_val(trained)
  files = list(zip(val.paths, [int(label) for label in val.labels]))
  # ReaL's sets: 4 images without one (left out), 5 with every class (a
  # sure hit), the rest their own label.
  sets = [
    [] if i < 4 else list(range(40)) if i < 9 else [y]
    for i, (_, y) in enumerate(files)
  ]
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
          real_label=sets[i],
          file_name=f'ILSVRC2012_val_{i + 1:08d}.JPEG',
        ),
      )
      for i, (p, y) in enumerate(files)
    ],
  )
  own = evaluate(workdir)
  v2 = evaluate(
    workdir,
    imagenet_variants.TestSet('imagenet_v2'),
    tfds_data_dir=str(tmp_path),
  )
  assert_same_counts(v2, own)
  real = evaluate(
    workdir, imagenet_variants.TestSet('real'), tfds_data_dir=str(tmp_path)
  )
  assert real['num_examples'] == 37 and real['test_set'] == 'real'
  # The same sets from the released files give the same counts and loss.
  released = tmp_path / 'real.json'
  released.write_text(json.dumps(sets))
  from_files = evaluate(
    workdir,
    imagenet_variants.TestSet('real', str(released)),
    image_folder=str(_real_folder(root, val, tmp_path)),
  )
  assert_same_counts(real, from_files)
  assert real['top1_accuracy'] > 5 / 37  # the sure hits count


def test_test_sets_refuse_what_they_cannot_read(trained, tmp_path):
  root, workdir, val = _with_val(trained)
  with pytest.raises(ConfigError, match='is not one of imagenet_v2, real'):
    evaluate(workdir, imagenet_variants.TestSet('imagenet_v3'))
  with pytest.raises(ConfigError, match='has the variants matched-frequency'):
    evaluate(workdir, imagenet_variants.TestSet('imagenet_v2/top-images'))
  with pytest.raises(ConfigError, match='no such file or folder'):
    evaluate(
      workdir,
      imagenet_variants.TestSet('imagenet_v2', str(tmp_path / 'nowhere')),
    )
  with pytest.raises(ConfigError, match='named by class index'):
    evaluate(
      workdir, imagenet_variants.TestSet('imagenet_v2', str(root / 'val'))
    )
  bad = tmp_path / 'real.json'
  bad.write_text(json.dumps([[45]] * 41))
  real_root = _real_folder(root, val, tmp_path)
  with pytest.raises(ConfigError, match='holds class 45; this run has'):
    evaluate(
      workdir,
      imagenet_variants.TestSet('real', str(bad)),
      image_folder=str(real_root),
    )
  with pytest.raises(ConfigError, match='by their number'):
    evaluate(
      workdir, imagenet_variants.TestSet('real', str(bad))
    )  # val/ named otherwise
  np.testing.assert_array_equal(
    imagenet_variants.real_label_sets(
      str(bad), ['x/ILSVRC2012_val_00000002.JPEG']
    ),
    [[45]],
  )


def test_evaluation_is_the_plain_forward_pass_whatever_trains():
  """Mixup, CutMix and label smoothing change training only: the
  evaluation of a run with them is the model's inference on the
  unaugmented held-out images, computed here directly."""
  from resnet_jax.data import augment
  from resnet_jax.train import losses
  from tests.helpers import tiny_config

  config = tiny_config(eval_batch_size=200)
  config.data.update(mixup_alpha=0.4, cutmix_alpha=1.0, mix_lambda='example')
  config.optim.label_smoothing = 0.1
  exp = loop.setup(config, jax.devices()[:2])
  state = jax.device_get(loop.initial_state(exp))
  result = exp.evaluator(loop.initial_state(exp))
  split = exp.evaluator._split
  logits = exp.model.apply(
    {'params': state.params, 'batch_stats': state.batch_stats},
    augment.normalise(split.images, state.pixel_mean),
    train=False,
  )
  loss = float(np.mean(losses.cross_entropy(logits, split.labels)))
  wrong = int(
    np.sum(np.argmax(np.asarray(logits), -1) != np.asarray(split.labels))
  )
  assert result['num_examples'] == len(split.labels) == 200
  assert result['loss'] == pytest.approx(loss, rel=1e-5)
  assert result['top1_error'] == pytest.approx(wrong / 200, abs=1e-9)
