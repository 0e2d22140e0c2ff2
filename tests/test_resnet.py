"""Structure and behaviour of the networks."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.model import blocks
from resnet_jax.model import resnet
from tests.helpers import load_config

CIFAR_DEPTHS = '(e.g. 20, 32, 44, 56, 110, 1202)'


def build(arg):
  config = load_config(f'configs/{arg}')
  return resnet.build(config.model, config.data.num_classes)


def param_shapes(model, size):
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x)['params']


def blocks_with_projection(params):
  """Names of the blocks whose shortcut has a 1x1 projection and its BN."""
  found = []
  for name, block in params.items():
    shortcut = block.get('shortcut', {}) if isinstance(block, dict) else {}
    if shortcut:
      assert set(shortcut) == {'conv_proj', 'bn_proj'}
      found.append(name)
  return found


def block_names(params):
  return [n for n in params if n.startswith('stage')]


@pytest.mark.parametrize(
  'arg,size,transitions',
  [
    ('cifar10.py:resnet20', 32, 2),
    ('cifar10.py:resnet56', 32, 2),
    ('imagenet.py:resnet18', 64, 3),
    ('imagenet.py:resnet34', 64, 3),
    ('imagenet.py:resnet50', 64, 4),  # stage 1 widens 64 -> 256 too
    ('imagenet.py:resnet101', 64, 4),
  ],
)
def test_shortcut_structure(arg, size, transitions):
  def params(shortcut):
    return param_shapes(build(f'{arg},shortcut={shortcut}'), size)

  assert blocks_with_projection(params('A')) == []
  b = blocks_with_projection(params('B'))
  assert len(b) == transitions
  assert all(name.endswith('_block0') for name in b)
  assert blocks_with_projection(params('D')) == b
  c = params('C')  # every block projects
  assert blocks_with_projection(c) == block_names(c)
  assert len(block_names(c)) == sum(build(arg).stage_sizes)


def test_table_1s_depths_only_and_their_blocks():
  for depth, bottleneck in [(18, False), (34, False), (50, True), (152, True)]:
    net = resnet.imagenet_net(depth)
    block = net.keywords['block_cls']
    assert (block is blocks.BottleneckBlock) == bottleneck, depth
    assert net.keywords['shortcut'] == ('B' if bottleneck else 'A')
  assert resnet.imagenet_net(34, residual=False).keywords['shortcut'] is None
  with pytest.raises(ConfigError) as refused:
    resnet.imagenet_net(19)
  assert str(refused.value) == (
    'ImageNet depth 19 is not one of 18, 34, 50, 101, 152'
  )


def test_cifar_depths_are_6n_plus_2_only():
  blocks_per_stage = [resnet.cifar_blocks_per_stage(d) for d in (8, 20, 110)]
  assert blocks_per_stage == [1, 3, 18]
  for depth in (2, 7, 21, 22):  # 2 = 6 * 0 + 2: no blocks
    with pytest.raises(ConfigError) as refused:
      resnet.cifar_blocks_per_stage(depth)
    assert str(refused.value) == (
      f'CIFAR depth {depth} is not 6n+2 with n >= 1 {CIFAR_DEPTHS}'
    )


@pytest.mark.parametrize('arg', ['cifar10.py:plain20', 'imagenet.py:plain34'])
def test_plain_nets_have_no_shortcut(arg):
  model = build(arg)
  assert model.shortcut is None
  params = param_shapes(model, 64)
  paths = ['/'.join(p) for p in flax.traverse_util.flatten_dict(params)]
  assert not any('shortcut' in p for p in paths)


def test_option_a_pads_subsampled_identity_with_zeros():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  sc = blocks.Shortcut('A', 32, 2, resnet.conv_padded, nn.BatchNorm)
  y, variables = sc.init_with_output(jax.random.key(0), x)
  assert variables == {}  # option A has no parameters
  np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(y[..., 16:], 0)


def test_option_d_average_pools_before_a_stride_one_projection():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  norm = lambda name: nn.BatchNorm(use_running_average=True, name=name)
  sc = blocks.Shortcut('D', 32, 2, resnet.conv_padded, norm)
  y, variables = sc.init_with_output(jax.random.key(0), x)
  kernel = variables['params']['conv_proj']['kernel']
  pooled = x.reshape(2, 4, 2, 4, 2, 16).mean(axis=(2, 4))
  expected = jnp.einsum('nhwc,cd->nhwd', pooled, kernel[0, 0])
  expected = expected / jnp.sqrt(1 + 1e-5)  # BN at init: identity
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  'block_cls,features', [(blocks.BasicBlock, 16), (blocks.BottleneckBlock, 64)]
)
@pytest.mark.parametrize('shortcut', ['A', 'B', 'D'])
@pytest.mark.parametrize('train', [True, False])
def test_zero_branch_returns_relu_of_input(
  block_cls, features, shortcut, train
):
  norm = lambda **kw: nn.BatchNorm(use_running_average=not train, **kw)
  block = block_cls(
    features=features,
    strides=1,
    conv=resnet.conv_padded,
    norm=norm,
    shortcut=shortcut,
    zero_init_last_bn=True,
  )
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, features))
  variables = block.init(jax.random.key(0), x)
  y, _ = block.apply(variables, x, mutable=['batch_stats'])
  np.testing.assert_allclose(y, nn.relu(x), atol=1e-6)


@pytest.mark.parametrize(
  'block_cls,features',
  [(blocks.PreActBasicBlock, 16), (blocks.PreActBottleneckBlock, 64)],
)
def test_zero_branch_preact_block_is_identity(block_cls, features):
  norm = lambda **kw: nn.BatchNorm(use_running_average=True, **kw)
  block = block_cls(
    features=features,
    strides=1,
    conv=resnet.conv_padded,
    norm=norm,
    shortcut='B',
    zero_init_last_bn=True,
  )
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, features))
  y = block.apply(block.init(jax.random.key(0), x), x)
  np.testing.assert_allclose(y, x, atol=1e-6)  # a clean identity path


def test_preact_projection_reads_the_preactivated_input():
  """He et al. 2016 (v2), as the authors' code: where the shortcut
  projects, it reads relu(bn1(x)), not x. With the branch zeroed and BN
  at its initial statistics (x / sqrt(1 + eps)), the block is the 1x1
  stride-2 projection of relu(x / sqrt(1 + eps)), divided once more."""
  eps = 1e-5
  norm = lambda **kw: nn.BatchNorm(use_running_average=True, epsilon=eps, **kw)
  block = blocks.PreActBasicBlock(
    features=32,
    strides=2,
    conv=resnet.conv_padded,
    norm=norm,
    shortcut='B',
    zero_init_last_bn=True,
  )
  x = jax.random.normal(jax.random.key(3), (2, 8, 8, 16))
  variables = block.init(jax.random.key(0), x)
  kernel = variables['params']['shortcut']['conv_proj']['kernel'][0, 0]
  pre = np.maximum(np.asarray(x) / np.sqrt(1 + eps), 0)
  expected = pre[:, ::2, ::2, :] @ np.asarray(kernel) / np.sqrt(1 + eps)
  np.testing.assert_allclose(block.apply(variables, x), expected, atol=1e-5)


@pytest.mark.parametrize(
  'style,block_cls,bn_init,bn_final',
  [
    ('standard', blocks.BasicBlock, True, False),
    ('preact', blocks.PreActBasicBlock, False, True),
  ],
)
def test_block_style_of_a_cifar_net(style, block_cls, bn_init, bn_final):
  """model.block='preact' (He et al. 2016, v2): pre-activation blocks,
  one BN-ReLU after the last block and none after the first conv (the
  first block normalises its input); the paper's nets the other way."""
  config = load_config(f'configs/cifar10.py:resnet8,block={style}')
  model = resnet.build(config.model, 10)
  assert model.block_cls is block_cls
  shapes = jax.eval_shape(
    model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3))
  )
  names = set(shapes['params'])
  assert ('bn_init' in names, 'bn_final' in names) == (bn_init, bn_final)


def test_build_hands_the_options_to_the_net():
  """Values other than the net's own defaults, from a config's arguments
  and keys, each where build puts it."""
  m = load_config(
    'configs/imagenet.py:resnet50,shortcut=D,stride=v1.5,block=preact,'
    'dtype=bfloat16'
  ).model
  m.init, m.bn_momentum, m.bn_epsilon = 'fan_out', 0.99, 1e-3
  m.remat, m.bn_frozen, m.zero_init_residual = True, True, True
  m.stem, m.input_scale = 'deep', (58.4, 57.1, 57.4)
  model = resnet.build(m, 1000)
  assert (model.shortcut, model.stride_in) == ('D', 'v1.5')
  assert model.block_cls is blocks.PreActBottleneckBlock
  assert model.dtype.__name__ == 'bfloat16'
  assert (model.init_mode, model.bn_momentum, model.bn_epsilon) == (
    'fan_out',
    0.99,
    1e-3,
  )
  assert (model.remat, model.bn_frozen, model.zero_init_last_bn) == (True,) * 3
  assert model.deep_stem and model.input_scale == (58.4, 57.1, 57.4)


def test_bottleneck_stride_placement():
  def kernel_strides(stride):
    seen = {}

    def record(next_fun, args, kwargs, context):
      m = context.module
      if isinstance(m, nn.Conv) and m.path[0] == 'stage2_block0':
        seen[m.name] = m.strides
      return next_fun(*args, **kwargs)

    model = build(f'imagenet.py:resnet50,stride={stride}')
    x = jnp.zeros((1, 64, 64, 3))
    with nn.intercept_methods(record):
      jax.eval_shape(model.init, jax.random.key(0), x)
    return seen['conv1'], seen['conv2']

  assert kernel_strides('v1') == (2, 1)
  assert kernel_strides('v1.5') == (1, 2)


@pytest.mark.parametrize(
  'kernel, stride, size',
  [(7, 2, 8), (7, 2, 9), (3, 2, 8), (3, 1, 5), (1, 2, 7)],
)
def test_conv_windows_are_centred_on_strided_positions(kernel, stride, size):
  """Output (i, j) of a k x k conv with stride s sees the inputs within k // 2
  of (s i, s j), as in Caffe and PyTorch, so there are ceil(n / s) outputs a
  side. XLA's 'SAME' would centre a stride-2 conv half a pixel off. An impulse
  at each input position and an all-ones kernel show every window."""
  ones = nn.initializers.ones
  conv = resnet.conv_padded(1, (kernel, kernel), stride, kernel_init=ones)
  impulses = jnp.eye(size * size).reshape(size * size, size, size, 1)
  params = conv.init(jax.random.key(0), impulses)['params']
  assert set(params) == {'kernel'}  # no bias
  seen = np.asarray(conv.apply({'params': params}, impulses))[..., 0]
  out = -(-size // stride)
  centres = stride * np.arange(out)
  near = np.abs(centres[None, :] - np.arange(size)[:, None]) <= kernel // 2
  expected = near[:, None, :, None] & near[None, :, None, :]
  np.testing.assert_array_equal(seen, expected.reshape(size * size, out, out))


def test_he_normal_init_and_bn_defaults():
  for mode, fan in [('fan_in', 3 * 3 * 64), ('fan_out', 3 * 3 * 64)]:
    config = load_config('configs/cifar10.py:resnet110')
    config.model.init = mode
    model = resnet.build(config.model, 10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
    kernels = [params[f'stage3_block{i}']['conv2']['kernel'] for i in range(18)]
    std = float(jnp.std(jnp.stack(kernels)))
    assert std == pytest.approx(np.sqrt(2 / fan), rel=0.01)
  # A conv whose fans differ tells fan_in from fan_out: 3x3x3 -> 16.
  stem = params['conv_init']['kernel']
  assert stem.shape == (3, 3, 3, 16)
  assert model.bn_momentum == 0.9 and model.bn_epsilon == 1e-5
  assert not model.zero_init_last_bn
  # he_normal's own default is the paper's fan_in: on a kernel whose fans
  # differ (3x3x64 -> 128), std sqrt(2 / 576), not sqrt(2 / 1152).
  kernel = resnet.he_normal()(jax.random.key(2), (3, 3, 64, 128))
  assert float(jnp.std(kernel)) == pytest.approx(np.sqrt(2 / 576), rel=0.01)


def test_bn_running_average_uses_flax_momentum():
  model = build('cifar10.py:resnet20')
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3)) + 1.0
  variables = model.init(jax.random.key(1), x)
  _, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  conv = variables['params']['conv_init']['kernel']
  y = jax.lax.conv_general_dilated(
    x,
    conv,
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  new_mean = state['batch_stats']['bn_init']['mean']
  # 0.9 * old (zero) + 0.1 * batch mean: PyTorch's momentum=0.1.
  np.testing.assert_allclose(
    new_mean, 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
  )


def test_zero_init_residual_switch():
  config = load_config('configs/cifar10.py:resnet20')
  config.model.zero_init_residual = True
  model = resnet.build(config.model, 10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))['params']
  assert not params['stage1_block0']['bn2']['scale'].any()
  assert params['stage1_block0']['bn1']['scale'].all()


NAMED = {
  'ResNet20': (resnet.ResNet20, 32),
  'ResNet32': (resnet.ResNet32, 32),
  'ResNet44': (resnet.ResNet44, 32),
  'ResNet56': (resnet.ResNet56, 32),
  'ResNet110': (resnet.ResNet110, 32),
  'ResNet1202': (resnet.ResNet1202, 32),
  'Plain20': (resnet.Plain20, 32),
  'Plain32': (resnet.Plain32, 32),
  'Plain44': (resnet.Plain44, 32),
  'Plain56': (resnet.Plain56, 32),
  'Plain110': (resnet.Plain110, 32),
  'ResNet18': (resnet.ResNet18, 64),
  'ResNet34': (resnet.ResNet34, 64),
  'ResNet50': (resnet.ResNet50, 64),
  'ResNet101': (resnet.ResNet101, 64),
  'ResNet152': (resnet.ResNet152, 64),
  'Plain18': (resnet.Plain18, 64),
  'Plain34': (resnet.Plain34, 64),
  'ResNeXt50_32x4d': (resnet.ResNeXt50_32x4d, 64),
  # He et al. 2019's ResNet-50-D: v1.5 strides, shortcut D, the deep stem.
  'ResNet50_D': (
    functools.partial(
      resnet.ResNet50, stride_in='v1.5', shortcut='D', deep_stem=True
    ),
    64,
  ),
}


# Run for real: one network of each kind (stem, block, plain or residual)
# in float32 and bfloat16, the ImageNet ones with one block a stage (the
# same layers, a quarter of the dispatches); every named network's shapes
# and dtypes are traced below without running it.
RUN = ('Plain20', 'Plain18', 'ResNet50', 'ResNet50_D')
BF16 = ('ResNet20', 'ResNeXt50_32x4d')


@pytest.mark.parametrize(
  'name,dtype',
  [(n, jnp.float32) for n in RUN] + [(n, jnp.bfloat16) for n in BF16],
)
def test_named_models_forward(name, dtype):
  """Finite, varied logits from init and a training-mode forward pass,
  compiled as one function (with the suite's compilation cache, cheaper
  than dispatching every op eagerly)."""
  factory, size = NAMED[name]
  model = factory(dtype=dtype)
  if model.stem == 'imagenet':
    model = model.clone(stage_sizes=(1, 1, 1, 1))
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))

  @jax.jit
  def forward(x):
    variables = model.init(jax.random.key(1), x)
    logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return logits

  logits = forward(x)
  assert bool(jnp.isfinite(logits).all())
  assert logits.std() > 0


# bfloat16 traced for one network of each kind: its stem, block, shortcut
# and plain or residual; depth only repeats the same blocks.
BF16_TRACED = (
  'ResNet20',
  'Plain20',
  'ResNet18',
  'Plain18',
  'ResNet50',
  'ResNeXt50_32x4d',
  'ResNet50_D',
)


@pytest.mark.parametrize('name', [n for n in NAMED if n != 'ResNet1202'])
def test_named_models_shapes_and_dtypes(name):
  """Logits (batch, classes) in float32, parameters and BN statistics in
  float32, in bfloat16 too (BF16_TRACED): traced, not run (the deepest nets
  would take minutes on a CPU)."""
  factory, size = NAMED[name]
  # (ResNet-1202, ResNet-110's blocks 200 a stage, is traced whole by
  # tests/test_counting.py, which counts its 19.4M parameters.)
  dtypes = (jnp.float32,) + ((jnp.bfloat16,) if name in BF16_TRACED else ())
  for dtype in dtypes:
    model = factory(dtype=dtype)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(1), x)
    logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
      variables,
      x,
    )
    assert logits.shape == (2, model.num_classes)
    assert logits.dtype == jnp.float32  # logits in f32 whatever the dtype
    leaves = jax.tree.leaves(variables['params']) + jax.tree.leaves(state)
    assert {leaf.dtype for leaf in leaves} == {jnp.dtype(jnp.float32)}


def test_named_models_equal_config_models():
  pairs = [
    ('cifar10.py:resnet56', resnet.ResNet56),
    ('cifar10.py:plain20', resnet.Plain20),
    ('imagenet.py:resnet34', resnet.ResNet34),
    ('imagenet.py:resnet152', resnet.ResNet152),
    ('imagenet.py:resnext50_32x4d', resnet.ResNeXt50_32x4d),
  ]
  for arg, factory in pairs:
    assert build(arg) == factory(), arg


def test_block_responses_for_figure7():
  # 11 blocks a stage: block10 after block9 (numeric, not string, order).
  model = build('cifar10.py:resnet68')
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  variables = model.init(jax.random.key(1), x)
  responses = resnet.block_responses(model, variables, x)
  names = [name for name, _ in responses]
  assert names == [f'stage{s}_block{b}' for s in (1, 2, 3) for b in range(11)]
  # By default the running statistics (evaluation); with train=True each
  # BN normalises by the batch's own: zero mean, unit variance per channel.
  ((_, (first, _)), *_) = resnet.block_responses(model, variables, x)
  ((_, (batch, _)), *_) = resnet.block_responses(
    model, variables, x, train=True
  )
  np.testing.assert_allclose(batch.mean((0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(batch.var((0, 1, 2)), 1.0, atol=1e-2)
  assert np.abs(first.var((0, 1, 2)) - 1.0).max() > 0.1
  assert all(len(r) == 2 for _, r in responses)
  assert responses[0][1][-1].shape == (2, 32, 32, 16)
  assert responses[-1][1][-1].shape == (2, 8, 8, 64)
  plain = build('cifar10.py:plain20')
  pv = plain.init(jax.random.key(1), x)
  assert len(resnet.block_responses(plain, pv, x)) == 9


def test_a_blocks_parameters_keep_their_names():
  """Checkpoints, resumes of older workdirs and the torchvision mapping
  read parameters by name: each block's convolutions and BNs are conv1,
  bn1, ... in order, a projection 'shortcut'."""
  basic = ['bn1', 'bn2', 'conv1', 'conv2']
  bottleneck = ['bn1', 'bn2', 'bn3', 'conv1', 'conv2', 'conv3']
  image = jnp.zeros((1, 32, 32, 3))
  resnet20 = jax.eval_shape(resnet.ResNet20().init, jax.random.key(0), image)
  resnet50 = jax.eval_shape(resnet.ResNet50().init, jax.random.key(0), image)
  for variables, block, names in (
    (resnet20, 'stage2_block0', basic),  # option A: no weights
    (resnet50, 'stage1_block0', bottleneck + ['shortcut']),
    (resnet50, 'stage2_block1', bottleneck),
  ):
    assert sorted(variables['params'][block]) == names, block


BOTTLENECK_ONLY = (
  'model.cardinality and model.stride apply to bottleneck nets '
  '(depth 50, 101, 152) only'
)


@pytest.mark.parametrize(
  'arg,key,value,message',
  [
    (
      'cifar10.py:resnet21',
      None,
      None,
      f'CIFAR depth 21 is not 6n+2 with n >= 1 {CIFAR_DEPTHS}',
    ),
    (
      'cifar10.py:resnet2',
      None,
      None,
      f'CIFAR depth 2 is not 6n+2 with n >= 1 {CIFAR_DEPTHS}',
    ),
    (
      'imagenet.py:resnet20',
      None,
      None,
      'ImageNet depth 20 is not one of 18, 34, 50, 101, 152',
    ),
    (
      'cifar10.py:resnet20',
      'family',
      'mnist',
      "model.family='mnist' is not one of cifar, imagenet",
    ),
    (
      'cifar10.py:resnet20',
      'shortcut',
      'E',
      "model.shortcut='E' is not one of A, B, C, D",
    ),
    (
      'cifar10.py:plain20',
      'shortcut',
      'A',
      "model.shortcut='A' on a plain "
      'net: plain nets have no shortcut (leave it None)',
    ),
    (
      'cifar10.py:resnet20',
      'block',
      'x',
      "model.block='x' is not one of standard, preact",
    ),
    ('cifar10.py:resnet20', 'stride', 'v1.5', BOTTLENECK_ONLY),
    ('cifar10.py:resnet20', 'cardinality', 32, BOTTLENECK_ONLY),
    (
      'imagenet.py:resnet50',
      'stride',
      'v3',
      "model.stride='v3' is not one of v1, v1.5",
    ),
    (
      'cifar10.py:resnet20',
      'dtype',
      'float16',
      "model.dtype='float16' is not one of float32, bfloat16",
    ),
    (
      'cifar10.py:resnet20',
      'init',
      'xavier',
      "model.init='xavier' is not one of fan_in, fan_out",
    ),
    (
      'imagenet.py:resnet50',
      'stem',
      'wide',
      "model.stem='wide' is not one of standard, deep",
    ),
    (
      'cifar10.py:resnet20',
      'stem',
      'deep',
      "model.stem='deep' is an ImageNet stem; CIFAR nets have one 3x3 conv",
    ),
    (
      'cifar10.py:plain20',
      'zero_init_residual',
      True,
      'model.zero_init_residual=True on a plain net: with no shortcut to '
      'carry the signal, zeroing the last BN of each block zeroes the '
      "network's output (it is a residual nets' trick)",
    ),
  ],
)
def test_bad_model_values_rejected_by_build(arg, key, value, message):
  """In process, with the whole message: the key it names is the one to
  fix (a refusal naming another key, or none, is a wrong message)."""
  config = load_config(f'configs/{arg}')
  if key:
    config.model[key] = value
  with pytest.raises(ConfigError) as refused:
    resnet.build(config.model, config.data.num_classes)
  assert str(refused.value) == message
