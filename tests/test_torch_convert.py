"""torchvision checkpoints into our models and back."""

import glob
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from resnet_jax.model import torch_convert
from tests.helpers import REPO
from tests.helpers import load_config
from tests.helpers import run_cli


def _model(arg, num_classes=1000):
  config = load_config(f'configs/imagenet.py:{arg}')
  return config, resnet.build(config.model, num_classes)


def _random_variables(model, size=64, seed=0):
  """Random parameters and BN statistics in the model's shapes (numpy:
  no initialisation run): every tensor differs."""
  shapes = jax.eval_shape(
    model.init, jax.random.key(0), jnp.zeros((1, size, size, 3))
  )
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes
  )


def _real_images(count, size):
  """The first `count` bundled ImageNet JPEGs, resized, uint8 NHWC."""
  from PIL import Image

  paths = sorted(glob.glob(str(REPO / 'data/imagenet-sample/train/*/*')))
  return np.stack(
    [
      np.asarray(Image.open(p).convert('RGB').resize((size, size)))
      for p in paths[:count]
    ]
  )


def test_round_trips_are_exact():
  _, model = _model('resnet18,shortcut=B', 10)
  variables = _random_variables(model)
  mean = np.array([[[120.0, 115.0, 100.0]]], np.float32)
  exported, normalise = torch_convert.export_state_dict(variables, mean)
  assert exported['conv1.weight'].shape == (64, 3, 7, 7)  # OIHW
  assert exported['fc.weight'].shape == (10, 512)
  assert exported['layer2.0.downsample.1.running_var'].shape == (128,)
  assert 'layer1.0.downsample.0.weight' not in exported  # B: no projection
  np.testing.assert_allclose(normalise['mean'], mean.ravel() / 255)
  template = jax.eval_shape(lambda: variables)
  back = torch_convert.import_state_dict(exported, template)
  jax.tree.map(np.testing.assert_array_equal, back, variables)
  again, _ = torch_convert.export_state_dict(back, mean, (2.0, 2.0, 2.0))
  assert again.keys() == exported.keys()
  for name in exported:
    np.testing.assert_array_equal(again[name], exported[name], err_msg=name)


def test_bad_state_dicts_and_configs_are_named():
  _, model = _model('resnet18,shortcut=B', 10)
  variables = _random_variables(model)
  mean = np.zeros((1, 1, 3), np.float32)
  good, _ = torch_convert.export_state_dict(variables, mean)
  template = jax.eval_shape(lambda: variables)
  bad = dict(good)
  del bad['layer3.1.bn2.running_mean']
  bad['layer5.0.conv1.weight'] = np.zeros(1)
  bad['fc.weight'] = np.zeros((1000, 512), np.float32)
  with pytest.raises(ConfigError) as e:
    torch_convert.import_state_dict(bad, template)
  message = str(e.value)
  assert 'missing: layer3.1.bn2.running_mean' in message
  assert 'unexpected: layer5.0.conv1.weight' in message
  assert 'fc.weight: (10, 512) expected, (1000, 512) found' in message
  config, _ = _model('resnet50')  # v1: the stride in the first 1x1
  with pytest.raises(ConfigError, match="'stride': 'v1'"):
    torch_convert.check_config(config.model)
  with pytest.raises(ConfigError, match='per-pixel mean'):
    torch_convert.export_state_dict(variables, np.zeros((224, 224, 3)))


@pytest.mark.parametrize('arg', ['resnet18', 'resnext50_32x4d'])
def test_same_logits_as_pytorch_on_real_images(arg):
  torch = pytest.importorskip('torch')
  from tests import torchvision_layout

  net = torchvision_layout.build(arg, 1000)
  state_dict = {k: v.numpy() for k, v in net.state_dict().items()}
  options = ',stride=v1.5' if 'resnext' in arg else ',shortcut=B'
  config, model = _model(arg + options)
  torch_convert.check_config(config.model)
  template = jax.eval_shape(
    model.init, jax.random.key(0), jnp.zeros((1, 96, 96, 3))
  )
  variables = torch_convert.import_state_dict(state_dict, template)
  mean, scale = torch_convert.input_normalisation()
  config.model.input_scale = scale
  model = resnet.build(config.model, 1000)
  images = _real_images(4, 96)
  m = np.array(torch_convert.TORCHVISION_MEAN, np.float32)
  s = np.array(torch_convert.TORCHVISION_STD, np.float32)
  x = torch.from_numpy(((images / 255 - m) / s).astype(np.float32))
  with torch.no_grad():
    expected = net(x.permute(0, 3, 1, 2)).numpy()
  ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(
    variables, images.astype(np.float32) - mean
  )
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
  assert (ours.argmax(1) == expected.argmax(1)).all()


def test_convert_cli_import_evaluate_export(tmp_path):
  """A .safetensors file in torchvision's layout -> (the convert command)
  a workdir that evaluates -> the same tensors back out."""
  from safetensors.numpy import load_file
  from safetensors.numpy import save_file

  _, model = _model('resnet18,shortcut=B', 40)
  variables = _random_variables(model)
  tensors, _ = torch_convert.export_state_dict(
    variables, np.zeros((1, 1, 3), np.float32)
  )
  source = tmp_path / 'resnet18.safetensors'
  save_file(tensors, str(source))
  workdir = tmp_path / 'imported'
  config = [
    '--config=configs/imagenet.py:resnet18,shortcut=B',
    '--config.data.num_classes=40',
  ]
  imported = run_cli(
    '-m',
    'resnet_jax.convert',
    f'--torch_checkpoint={source}',
    f'--workdir={workdir}',
    *config,
  )
  assert imported.returncode == 0, imported.stderr[-3000:]
  assert json.loads(imported.stdout.splitlines()[-1])['tensors'] == len(tensors)
  # The rest in-process: what evaluate and convert --export call.
  from resnet_jax.eval import saved_run
  from resnet_jax.paper.reproduce import apply_overrides
  from resnet_jax.run import saved_config
  from resnet_jax.train import torchvision_io

  folder = tmp_path / 'images'
  folder.mkdir()
  (folder / 'val').symlink_to(REPO / 'data/imagenet-sample/train')
  overrides = [
    f'data.image_folder={folder}',
    'data.image_size=64',
    'data.eval_on=val',
    'train.eval_batch_size=8',
  ]
  config = apply_overrides(saved_config.read(str(workdir)), overrides)
  assert saved_run.evaluate_workdir(config, str(workdir))['num_examples'] == 40
  again = load_config('configs/imagenet.py:resnet18,shortcut=B')
  again.data.num_classes = 40
  with pytest.raises(ConfigError, match='already holds checkpoints'):
    torchvision_io.import_checkpoint(again, str(source), str(workdir))
  out = tmp_path / 'out.safetensors'
  normalise = torchvision_io.export_checkpoint(str(workdir), str(out))[
    'normalize'
  ]
  np.testing.assert_allclose(normalise['mean'], torch_convert.TORCHVISION_MEAN)
  np.testing.assert_allclose(normalise['std'], torch_convert.TORCHVISION_STD)
  back = load_file(str(out))
  assert back.keys() == tensors.keys()
  for name, value in tensors.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)
  # An import keeps no moving average: --weights=ema is refused.
  with pytest.raises(ConfigError, match='keeps no moving average'):
    torchvision_io.export_checkpoint(str(workdir), str(out), weights='ema')


def test_workdirs_saved_before_input_scale_still_resume_and_load(tmp_path):
  """model.input_scale is newer than some workdirs: their config.json
  reads as the default (no scaling), and only a real change is refused."""
  from resnet_jax.run import resume
  from resnet_jax.run import saved_config

  config = load_config('configs/cifar10.py:resnet20')
  written = json.loads(config.to_json_best_effort())
  del written['model']['input_scale']
  (tmp_path / 'config.json').write_text(json.dumps(written))
  resume.check_compatible(str(tmp_path), config)  # the same run: allowed
  assert saved_config.read(str(tmp_path)).model.input_scale == (1.0,) * 3
  config.model.input_scale = (2.0, 2.0, 2.0)
  with pytest.raises(ConfigError, match='model.input_scale'):
    resume.check_compatible(str(tmp_path), config)


@pytest.mark.parametrize('mode', ['linear_probe', 'full'])
def test_workdirs_saved_before_bn_frozen_read_as_they_trained(mode, tmp_path):
  """model.bn_frozen is newer than some fine-tuning workdirs: a linear
  probe's reads as frozen (as it trained), a full fine-tuning's not."""
  from resnet_jax.run import resume
  from resnet_jax.run import saved_config

  config = load_config(f'configs/finetune.py:resnet18,mode={mode}')
  config.model.bn_frozen = mode == 'linear_probe'  # as finetune.inherit sets
  written = json.loads(config.to_json_best_effort())
  del written['model']['bn_frozen']
  (tmp_path / 'config.json').write_text(json.dumps(written))
  resume.check_compatible(str(tmp_path), config)
  assert saved_config.read(str(tmp_path)).model.bn_frozen == (
    mode == 'linear_probe'
  )
