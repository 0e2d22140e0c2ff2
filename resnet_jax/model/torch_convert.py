"""torchvision ResNet/ResNeXt state dicts <-> our models' variables.

torchvision's ResNets are v1.5 (a bottleneck's stride in its 3x3 conv)
with option-B shortcuts, post-activation blocks and BN epsilon 1e-5: our
`configs/imagenet.py:resnet50,stride=v1.5` (and 101/152, ResNeXt), and
`resnet18,shortcut=B` (34 too: no bottleneck, no stride option; the
paper's Table 2 nets use option A, torchvision's B).
Tensor by tensor:

  conv1.weight                 conv_init/kernel     OIHW -> HWIO
  bn1.{weight,bias}            bn_init/{scale,bias}
  bn1.running_{mean,var}       batch_stats bn_init/{mean,var}
  layerS.B.convI / .bnI        stageS_blockB/convI / bnI
  layerS.B.downsample.0 / .1   stageS_blockB/shortcut/conv_proj / bn_proj
  fc.weight, fc.bias           head/kernel (transposed), head/bias

(`num_batches_tracked` counters have no counterpart and are dropped.)

Input: torchvision nets take (x / 255 - m) / s with ImageNet's channel
mean m and std s; ours take (x - pixel_mean) / model.input_scale. An
import sets the pixel mean to 255 m and model.input_scale to 255 s, the
same function with the same weights (the zero padding agrees too, as both
pad the normalised image), so the tensors are copied, never rescaled, and
a round trip is exact. Export says which normalisation PyTorch must use
for the checkpoint's own mean and scale.
"""

import re

import numpy as np

from resnet_jax.errors import ConfigError

# torchvision's transforms.Normalize for ImageNet (0-1 pixel scale).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
_IGNORED = 'num_batches_tracked'


def check_config(model_cfg):
  """Refuses model configs torchvision's layout cannot hold."""
  m = model_cfg
  wanted = dict(
    family='imagenet', block='standard', shortcut='B', stem='standard'
  )
  if m.family == 'imagenet' and m.depth >= 50:  # bottlenecks: v1 or v1.5
    wanted['stride'] = 'v1.5'
  wrong = {k: m[k] for k, v in wanted.items() if m[k] != v}
  if wrong or not m.residual:
    raise ConfigError(
      "torchvision's ResNets are ImageNet ResNets with option-B shortcuts "
      f'and v1.5 bottlenecks; this config has {wrong or "a plain net"}: '
      'use e.g. configs/imagenet.py:resnet50,stride=v1.5'
    )
  if m.bn_epsilon != 1e-5:
    raise ConfigError(f'model.bn_epsilon={m.bn_epsilon}: torchvision uses 1e-5')


def _torch_name(collection: str, path: tuple) -> str:
  """Our variable (collection, module path..., leaf) -> torchvision name."""
  *modules, leaf = path
  names = []
  for module in modules:
    stage = re.fullmatch(r'stage(\d+)_block(\d+)', module)
    if stage:
      names += [f'layer{stage[1]}', stage[2]]
    else:
      names.append(
        {
          'conv_init': 'conv1',
          'bn_init': 'bn1',
          'head': 'fc',
          'shortcut': 'downsample',
          'conv_proj': '0',
          'bn_proj': '1',
        }.get(module, module)
      )
  if collection == 'batch_stats':
    names.append({'mean': 'running_mean', 'var': 'running_var'}[leaf])
  else:
    names.append({'kernel': 'weight', 'scale': 'weight'}.get(leaf, leaf))
  return '.'.join(names)


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if hasattr(value, 'items'):  # dicts and FrozenDicts
      yield from _flatten(value, (*prefix, key))
    else:
      yield (*prefix, key), value


def _nest(flat: dict) -> dict:
  tree = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def _to_torch(path, value):
  value = np.asarray(value)
  if path[-1] != 'kernel':
    return value
  if value.ndim == 2:  # Dense (in, out) -> Linear (out, in)
    return value.T
  return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _from_torch(path, value):
  if path[-1] != 'kernel':
    return value
  if value.ndim == 2:
    return value.T
  return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def input_normalisation() -> tuple[np.ndarray, tuple]:
  """(pixel mean of shape (1, 1, 3), model.input_scale) equal to
  torchvision's Normalize on 0-1 pixels."""
  mean = 255.0 * np.array(TORCHVISION_MEAN, np.float64)
  scale = tuple(255.0 * v for v in TORCHVISION_STD)
  return mean.astype(np.float32).reshape(1, 1, 3), scale


def import_state_dict(state_dict: dict, template: dict) -> dict:
  """torchvision tensors (name -> array) onto `template`, our variables
  ({'params', 'batch_stats'} of the same architecture, for shapes and
  names). Raises ConfigError naming every missing, extra or mis-shaped
  tensor. The input normalisation to go with them: input_normalisation()."""
  tensors = {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED)}
  flat, missing, shapes = {}, [], []
  for collection in ('params', 'batch_stats'):
    for path, leaf in _flatten(template[collection]):
      name = _torch_name(collection, path)
      if name not in tensors:
        missing.append(name)
        continue
      value = np.asarray(tensors.pop(name), dtype=np.float32)
      value = _from_torch(path, value)
      if value.shape != tuple(leaf.shape):
        shapes.append(
          f'{name}: {tuple(_to_torch(path, np.zeros(leaf.shape)).shape)}'
          f' expected, {tuple(np.asarray(state_dict[name]).shape)} found'
        )
        continue
      flat[(collection, *path)] = value
  problems = []
  if missing:
    problems.append(f'missing: {", ".join(missing)}')
  if tensors:
    problems.append(f'unexpected: {", ".join(sorted(tensors))}')
  if shapes:
    problems.append(f'wrong shape: {"; ".join(shapes)}')
  if problems:
    raise ConfigError(
      'the state dict does not fit this model ('
      + ' | '.join(problems)
      + '); check the --config depth, width and num_classes'
    )
  return _nest(flat)


def export_state_dict(
  variables: dict, pixel_mean, input_scale=(1.0, 1.0, 1.0)
) -> tuple[dict, dict]:
  """Our variables -> (torchvision state dict of numpy arrays, the
  normalisation PyTorch must apply: {'mean': ..., 'std': ...} on 0-1
  pixels). Needs a per-channel pixel mean (data.mean='channel')."""
  pixel_mean = np.asarray(pixel_mean, np.float64)
  if pixel_mean.size != 3:
    raise ConfigError(
      f'the checkpoint has a per-pixel mean of shape {pixel_mean.shape}; '
      "torchvision's layout holds a per-channel one only (data.mean="
      "'channel')"
    )
  out = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in _flatten(variables[collection]):
      out[_torch_name(collection, path)] = np.ascontiguousarray(
        _to_torch(path, leaf)
      )
      if collection == 'batch_stats' and path[-1] == 'var':
        counter = _torch_name(collection, path).replace('running_var', _IGNORED)
        out[counter] = np.array(0, np.int64)
  normalise = dict(
    mean=[float(v) for v in pixel_mean.reshape(3) / 255.0],
    std=[float(v) / 255.0 for v in input_scale],
  )
  return out, normalise


def read(path: str) -> dict:
  """A state dict from a .pth/.pt file (needs PyTorch) or a .safetensors
  file, as numpy arrays; a checkpoint dict holding 'state_dict' or
  'model' is unwrapped."""
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file

    try:
      return load_file(path)
    except Exception as e:  # the library's errors vary by what is wrong
      raise ConfigError(f'{path}: not a readable safetensors file ({e})')
  if not path.endswith(('.pth', '.pt', '.bin')):
    raise ConfigError(f'{path}: expected a .pth, .pt or .safetensors file')
  try:
    import torch
  except ImportError as e:
    raise ConfigError(
      f'reading {path} needs PyTorch (pip install torch), or convert it to '
      '.safetensors first'
    ) from e
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:
    raise ConfigError(f'{path}: not a readable PyTorch file ({e})') from e
  for key in ('state_dict', 'model'):
    if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
      loaded = loaded[key]
  if not isinstance(loaded, dict):
    raise ConfigError(
      f'{path} holds a {type(loaded).__name__}, not a state dict'
    )
  return {
    k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
    for k, v in loaded.items()
  }


def write(path: str, state_dict: dict):
  """A .safetensors file, or a .pth (needs PyTorch)."""
  if path.endswith('.safetensors'):
    from safetensors.numpy import save_file

    save_file(state_dict, path)
    return
  try:
    import torch
  except ImportError as e:
    raise ConfigError(f'writing {path} needs PyTorch; use .safetensors') from e
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
