"""Every switch meets every other: a covering array (every pair of values
of any two switches in at least one case) over the refinements, the
optimizer and schedule keys, the three modes (training on CIFAR arrays,
fine-tuning and linear probing on an image set) and the networks'
shortcuts and block styles. Each case trains two steps of a ResNet-8 on
two devices, then resumes a copy of the run from its step-1 checkpoint,
and checks what must hold whatever the switches:

- the loss is finite at both steps;
- every trained leaf moves; what is frozen (a linear probe's backbone and
  BN statistics) stays bit for bit;
- the optimizer's weight decay touches exactly the leaves the config says
  (all, kernels only, never a frozen group; LARS kernels only);
- the moving average equals decay * average + (1 - decay) * weights;
- the resumed step 2 equals the uninterrupted one, bit for bit.

Combinations that cannot work are refused before anything compiles, one
line each (REFUSED; docs/bad_inputs.md). The ImageNet networks (and so
the deep stem) are not in the array: a ResNet-18 costs 22 s a case here;
tests/test_resnet.py checks them.
"""

import copy
import json
import os
import shutil

from allpairspy import AllPairs
import flax
import jax
import mlflow
import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.train import finetune
from resnet_jax.train import loop
from resnet_jax.train import saved_state
from resnet_jax.train import train_state
from tests.helpers import load_config
from tests.helpers import read_metrics
from tests.helpers import tiny_config
from tests.test_finetune import image_folder

FACTORS = {
  'mode': ['train', 'full', 'linear_probe'],
  'shortcut': ['A', 'B', 'C', 'D', 'plain'],
  'block': ['standard', 'preact'],
  'optimizer': ['sgd', 'adamw', 'lars'],
  'schedule': ['step', 'cosine'],
  'warmup': ['none', 'linear', 'constant'],
  'decay_on': ['all', 'kernels'],
  'decoupled': [False, True],
  'nesterov': [False, True],
  'clip': [None, 0.5],
  'smoothing': [0.0, 0.1],
  'mixup': [False, True],
  'cutmix': [False, True],
  'mix_lambda': ['batch', 'example'],
  'ema': ['off', 'on', 'warmup'],
  'zero_init': [False, True],
  'microbatches': [1, 2],
  'bn_sync': [False, True],
  'distill': [False, True],
  'host_augment': ['none', 'rand', 'trivial'],
  'erasing': [False, True],
  'dtype': ['float32', 'bfloat16'],
  'mlflow': [False, True],  # the metrics also to MLflow (a local folder)
}
NAMES = list(FACTORS)


def possible(case: dict) -> bool:
  """What the modes allow (the refused rest: REFUSED): fine-tuning keeps
  the source's network (a ResNet-8, option A); CIFAR arrays have no host
  augmentation. `case` may be partial."""
  if case.get('shortcut') == 'plain' and case.get('zero_init'):
    return False
  if case.get('mode', 'train') != 'train':
    return case.get('shortcut', 'A') == 'A' and case.get('block') != 'preact'
  return case.get('host_augment', 'none') == 'none' and not case.get('erasing')


def _pairs(case):
  return {
    (a, case[a], b, case[b])
    for i, a in enumerate(NAMES)
    for b in NAMES[i + 1 :]
    if a in case and b in case
  }


def possible_pairs() -> set:
  return {
    (a, va, b, vb)
    for i, a in enumerate(NAMES)
    for b in NAMES[i + 1 :]
    for va in FACTORS[a]
    for vb in FACTORS[b]
    if possible({a: va, b: vb})
  }


def covering_array() -> list[dict]:
  """allpairspy's pairwise cases of what the modes allow, then cases
  added greedily for the possible pairs its filtered search missed: each
  new case starts from a missing pair and gives every other switch the
  value that covers most of the still missing pairs."""
  cases = [
    dict(zip(NAMES, values))
    for values in AllPairs(
      list(FACTORS.values()),
      filter_func=lambda values: possible(dict(zip(NAMES, values))),
    )
  ]
  missing = possible_pairs() - set().union(*map(_pairs, cases))
  while missing:
    a, va, b, vb = min(missing, key=repr)
    case = {a: va, b: vb}
    for name in NAMES:
      if name in case:
        continue
      options = [v for v in FACTORS[name] if possible({**case, name: v})]
      case[name] = max(
        options, key=lambda v: len(_pairs({**case, name: v}) & missing)
      )
    cases.append({n: case[n] for n in NAMES})
    missing -= _pairs(case)
  return cases


CASES = covering_array()


def test_the_cases_cover_every_possible_pair():
  covered = set().union(*map(_pairs, CASES))
  assert possible_pairs() <= covered
  assert all(possible(c) for c in CASES)
  # allpairspy's 20-odd cases, and a few for what the modes exclude.
  assert len(possible_pairs()) > 700 and len(CASES) < 40, len(CASES)


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
  """(CIFAR run: the fine-tuning source and the CIFAR teacher, image
  folder, image-set teacher: a linear probe of 2 steps)."""
  root = tmp_path_factory.mktemp('combinations')
  cifar = str(root / 'cifar')
  config = tiny_config(length=2, checkpoint_every=2, batch_size=8)
  config.data.eval_on = 'none'
  loop.train_and_evaluate(config, cifar, jax.devices()[:2])
  folder = image_folder(root / 'images', per_class=(8, 2))
  teacher = str(root / 'image_teacher')
  loop.train_and_evaluate(
    _finetune(cifar, folder, 'linear_probe'), teacher, jax.devices()[:2]
  )
  return cifar, folder, teacher


def _finetune(source, folder, mode):
  config = load_config(f'configs/finetune.py:resnet8,family=cifar,mode={mode}')
  config.finetune.init_from = str(source)
  config.data.update(image_folder=str(folder), num_classes=2, eval_on='none')
  config.train.update(unit='steps', length=2, batch_size=8, checkpoint_every=2)
  return config


def case_config(case, sources):
  cifar, folder, image_teacher = sources
  if case['mode'] == 'train':
    net = 'plain8' if case['shortcut'] == 'plain' else 'resnet8'
    config = load_config(f'configs/quickstart.py:{net}')
    if case['shortcut'] != 'plain':
      config.model.shortcut = case['shortcut']
    config.model.block = case['block']
    config.train.update(unit='steps', length=2, batch_size=8)
    teacher = cifar
  else:
    config = _finetune(cifar, folder, case['mode'])
    config.model.shortcut, config.model.block = case['shortcut'], case['block']
    teacher = image_teacher
  d, o, t, m = config.data, config.optim, config.train, config.model
  t.update(log_every=1, eval_every=100, checkpoint_every=1, keep_checkpoints=3)
  d.eval_on = 'none'
  o.optimizer = case['optimizer']
  o.schedule = case['schedule']
  o.lr_boundaries = (1,) if case['schedule'] == 'step' else ()
  o.warmup = 'linear' if case['warmup'] == 'none' else case['warmup']
  o.warmup_steps = 0 if case['warmup'] == 'none' else 2
  o.warmup_lr = 0.01
  o.weight_decay_on = case['decay_on']
  o.decoupled_weight_decay = case['decoupled']
  o.nesterov = case['nesterov']
  o.clip_grad_norm = case['clip']
  o.label_smoothing = case['smoothing']
  d.mixup_alpha = 0.4 if case['mixup'] else 0.0
  d.cutmix_alpha = 1.0 if case['cutmix'] else 0.0
  d.mix_lambda = case['mix_lambda']
  t.ema_decay = None if case['ema'] == 'off' else 0.9
  t.ema_warmup = case['ema'] == 'warmup'
  m.zero_init_residual = case['zero_init']
  t.microbatches = case['microbatches']
  t.bn_sync = case['bn_sync']
  t.teacher = teacher if case['distill'] else None
  if case['mode'] != 'train':
    augment = case['host_augment']
    d.auto_augment = None if augment == 'none' else augment
    d.random_erasing = 0.5 if case['erasing'] else 0.0
  m.dtype = case['dtype']
  return config


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree))


def _assert_same(a, b, what):
  flat = [jax.tree_util.tree_flatten_with_path(jax.device_get(t)) for t in (a, b)]
  assert flat[0][1] == flat[1][1], what  # the same structure
  for (path, x), (_, y) in zip(flat[0][0], flat[1][0]):
    key = jax.tree_util.keystr(path)
    np.testing.assert_array_equal(x, y, err_msg=f'{what} {key}')


def _first_update(exp):
  """The optimizer's first update of weights `p` by gradients `g`,
  compiled once (eagerly, each of its operations compiles alone)."""
  return jax.jit(lambda g, p: exp.tx.update(g, exp.tx.init(p), p)[0])


def _stepped(update, params, by: str):
  """The leaves the optimizer changes, at weights of all ones (so that no
  weight is 0): by='decay' for zero gradients (the weight decay alone),
  by='gradient' for gradients of all ones."""
  ones = jax.tree.map(lambda p: np.ones(p.shape, np.float32), params)
  grads = ones if by == 'gradient' else jax.tree.map(np.zeros_like, ones)
  return {k for k, u in _flat(update(grads, ones)).items() if np.any(u != 0)}


def _check_case(case, sources, root):
  config = case_config(case, sources)
  if case['mlflow']:
    config.train.mlflow = (root / 'mlruns').as_uri()
  devices = jax.devices()[:2]
  built = copy.deepcopy(config)
  if 'finetune' in built:
    finetune.inherit(built)
  exp = loop.setup(built, devices)
  start = jax.device_get(loop._start(exp))

  a, b = root / 'a', root / 'b'
  loop.train_and_evaluate(copy.deepcopy(config), str(a), devices)
  losses = [r['loss'] for r in read_metrics(a)]
  assert len(losses) == 2 and np.isfinite(losses).all(), losses
  # A copy of the run, put back to its step-1 checkpoint, then resumed.
  shutil.copytree(a, b)
  shutil.rmtree(b / 'checkpoints' / '2')
  _, _, one = saved_state.load(str(b))
  loop.train_and_evaluate(copy.deepcopy(config), str(b), devices)
  _, _, two = saved_state.load(str(a))
  _, _, resumed = saved_state.load(str(b))
  _assert_same(resumed.params, two.params, 'resumed params')
  _assert_same(resumed.batch_stats, two.batch_stats, 'resumed BN statistics')
  _assert_same(resumed.opt_state, two.opt_state, 'resumed optimizer')
  assert [r['loss'] for r in read_metrics(b)] == losses
  if case['mlflow']:  # one MLflow run: both of a's steps, b's step 2 again
    client = mlflow.tracking.MlflowClient(tracking_uri=config.train.mlflow)
    run_id = json.loads((b / 'mlflow_run.json').read_text())['run_id']
    history = client.get_metric_history(run_id, 'train/loss')
    logged = sorted((m.step, m.value) for m in history)
    assert logged == [(1, losses[0]), (2, losses[1]), (2, losses[1])]

  probe = case['mode'] == 'linear_probe'
  p0, p2 = _flat(start.params), _flat(two.params)
  trained = {k for k in p0 if not (probe and k[0] != 'head')}
  for key in set(p0) - trained:  # frozen
    np.testing.assert_array_equal(p2[key], p0[key], err_msg=str(key))
  # Every trained leaf takes a step from a gradient (not every one moves
  # in two real steps: behind a zero-initialised BN scale the gradient is
  # 0, then too small to change a float32), and most moved.
  update = _first_update(exp)
  assert _stepped(update, start.params, 'gradient') == trained
  moved = {k for k in trained if np.any(p2[k] != p0[k])}
  assert len(moved) >= 0.75 * len(trained), sorted(trained - moved)
  assert all(k in moved for k in trained if k[0] == 'head')
  if probe:
    _assert_same(two.batch_stats, start.batch_stats, 'frozen BN statistics')
  else:
    assert any(
      np.any(x != y)
      for x, y in zip(
        jax.tree.leaves(two.batch_stats), jax.tree.leaves(start.batch_stats)
      )
    )

  decayed = _stepped(update, start.params, 'decay')
  kernels_only = case['decay_on'] == 'kernels' or case['optimizer'] == 'lars'
  expected = {k for k in trained if k[-1] == 'kernel' or not kernels_only}
  assert decayed == expected, sorted(decayed ^ expected)

  if case['ema'] != 'off':
    for step, before, after in ((0, start, one), (1, one, two)):
      decay = float(train_state.ema_decay_at(step, 0.9, case['ema'] == 'warmup'))
      weights = {'params': after.params, 'batch_stats': after.batch_stats}
      want = jax.tree.map(
        lambda e, w: decay * e + (1 - decay) * w, before.ema, weights
      )
      jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7),
        after.ema,
        want,
      )
  else:
    assert two.ema is None


# The suite trains a few cases, one of each mode (about a minute on two
# cores); RESNET_JAX_COMBINATIONS=all trains the whole array (27 cases,
# about 5 minutes: docs/testing.md).
EVERY = os.environ.get('RESNET_JAX_COMBINATIONS') == 'all'
SUITE = [
  next(i for i, c in enumerate(CASES) if c['mode'] == mode)
  for mode in FACTORS['mode']
]
CHOSEN = range(len(CASES)) if EVERY else SUITE


@pytest.mark.parametrize(
  'case', [CASES[i] for i in CHOSEN], ids=[f'case{i}' for i in CHOSEN]
)
def test_every_pair_of_switches_trains_freezes_decays_averages_resumes(
  case, sources, tmp_path, monkeypatch
):
  monkeypatch.setenv('MLFLOW_ALLOW_FILE_STORE', 'true')  # a local folder
  _check_case(case, sources, tmp_path)


# Combinations that cannot work, each refused in one line before anything
# compiles (docs/bad_inputs.md).
REFUSED = [
  (
    'fine-tuning onto another network',
    dict(mode='full', shortcut='B'),
    "model.shortcut='B', but .* holds a network with shortcut='A'",
  ),
  (
    'fine-tuning onto another block style',
    dict(mode='linear_probe', block='preact'),
    "model.block='preact', but .* holds a network with block='standard'",
  ),
  (
    'zero-initialised last BN on a plain net',
    dict(shortcut='plain', zero_init=True),
    'model.zero_init_residual=True on a plain net',
  ),
  (
    'an unknown way of drawing the mixing weight',
    dict(mixup=True, mix_lambda='pair'),
    "data.mix_lambda='pair' is not one of batch, example",
  ),
  (
    'several steps a call on streamed images',
    dict(mode='full', dispatch=2),
    'train.steps_per_dispatch > 1 needs the dataset on the device',
  ),
]


@pytest.mark.parametrize('what,change,message', REFUSED)
def test_combinations_that_cannot_work_are_refused_before_compiling(
  what, change, message, sources, tmp_path
):
  case = dict(CASES[0])
  case.update(mode='train', shortcut='A', block='standard', zero_init=False)
  case.update(host_augment='none', erasing=False, distill=False)
  case.update({k: v for k, v in change.items() if k != 'dispatch'})
  config = case_config(case, sources)
  config.train.steps_per_dispatch = change.get('dispatch', 1)
  with pytest.raises(ConfigError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / 'run'), jax.devices()[:2])
  assert not (tmp_path / 'run').exists()  # nothing written
