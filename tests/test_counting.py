"""Parameter and MAC counts equal the paper's tables."""

import pytest

from resnet_jax.model import counting
from resnet_jax.model import resnet
from tests.helpers import load_config


@pytest.fixture(scope='module')
def counts():
  """counting.count of a config argument's network. A network this module
  has counted already (the same layers by another argument: ResNet-152 by
  default and with shortcut=B) is not traced again. Kept by the fixture,
  not the process: a mutation run's next mutant counts afresh."""
  counted = {}

  def count(arg: str) -> dict:
    config = load_config(f'configs/{arg}')
    model = resnet.build(config.model, config.data.num_classes)
    key = (model, config.data.image_size)
    if key not in counted:
      counted[key] = counting.count(model, config.data.image_size)
    return counted[key]

  return count


# Options A / B (torchvision's published counts for B on ImageNet).
PARAMS_AB = {
  'cifar10.py:resnet20': (269_722, 272_474),
  'cifar10.py:resnet32': (464_154, 466_906),
  'cifar10.py:resnet44': (658_586, 661_338),
  'cifar10.py:resnet56': (853_018, 855_770),
  'cifar10.py:resnet110': (1_727_962, 1_730_714),
  'imagenet.py:resnet18': (11_515_688, 11_689_512),
  'imagenet.py:resnet34': (21_623_848, 21_797_672),
  'imagenet.py:resnet50': (22_780_456, 25_557_032),
  'imagenet.py:resnet101': (41_772_584, 44_549_160),
  'imagenet.py:resnet152': (57_416_232, 60_192_808),
}
# Option C on ImageNet: a projection in every block.
PARAMS_C_IMAGENET = {
  'imagenet.py:resnet18': 12_043_816,
  'imagenet.py:resnet34': 22_716_840,
  'imagenet.py:resnet50': 40_128_552,
  'imagenet.py:resnet101': 76_981_288,
  'imagenet.py:resnet152': 107_335_720,
}
# Option C figures that project only the blocks whose shape
# does not change; the paper's C ("all shortcuts are projections") also
# projects the two stage transitions, 16->32 and 32->64 with their BN:
# (16*32 + 2*32) + (32*64 + 2*64) = 2,752 more parameters.
PARAMS_C_CIFAR_SAME_SHAPE = {
  'cifar10.py:resnet20': 281_210,
  'cifar10.py:resnet32': 486_842,
  'cifar10.py:resnet44': 692_474,
  'cifar10.py:resnet56': 898_106,
  'cifar10.py:resnet110': 1_823_450,
}
CIFAR_TRANSITION_PROJECTIONS = 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64


@pytest.mark.parametrize('arg', PARAMS_AB)
def test_params_options_a_b_d(arg, counts):
  a, b = PARAMS_AB[arg]
  assert counts(f'{arg},shortcut=A')['params'] == a
  assert counts(f'{arg},shortcut=B')['params'] == b
  assert counts(f'{arg},shortcut=D')['params'] == b  # D: B's projections


@pytest.mark.parametrize('arg', PARAMS_C_IMAGENET)
def test_params_option_c_imagenet(arg, counts):
  assert counts(f'{arg},shortcut=C')['params'] == PARAMS_C_IMAGENET[arg]


@pytest.mark.parametrize('arg', PARAMS_C_CIFAR_SAME_SHAPE)
def test_params_option_c_cifar(arg, counts):
  expected = PARAMS_C_CIFAR_SAME_SHAPE[arg] + CIFAR_TRANSITION_PROJECTIONS
  assert CIFAR_TRANSITION_PROJECTIONS == 2_752
  assert counts(f'{arg},shortcut=C')['params'] == expected


def test_params_resnet1202_and_resnext(counts):
  assert counts('cifar10.py:resnet1202')['params'] == 19_421_274
  assert counts('imagenet.py:resnext50_32x4d')['params'] == 25_028_904


@pytest.mark.parametrize('depth', [20, 32, 44, 56, 110])
def test_plain_cifar_has_option_a_params(depth, counts):
  plain = counts(f'cifar10.py:plain{depth}')['params']
  assert plain == PARAMS_AB[f'cifar10.py:resnet{depth}'][0]


@pytest.mark.parametrize('depth', [18, 34])
def test_plain_imagenet_has_option_a_params(depth, counts):
  plain = counts(f'imagenet.py:plain{depth}')['params']
  assert plain == PARAMS_AB[f'imagenet.py:resnet{depth}'][0]


# Forward multiply-accumulates per image, within 1%. The ImageNet-18/34
# figures include the option-B projections (torchvision's layout).
MACS = {
  'cifar10.py:resnet20': 40.6e6,
  'cifar10.py:resnet56': 125.5e6,
  'cifar10.py:resnet110': 252.9e6,
  'imagenet.py:resnet18,shortcut=B': 1.814e9,
  'imagenet.py:resnet34,shortcut=B': 3.664e9,
  'imagenet.py:resnet50': 3.858e9,
  'imagenet.py:resnet101': 7.570e9,
  'imagenet.py:resnet152': 11.282e9,
  'imagenet.py:resnet50,stride=v1.5': 4.089e9,
}


@pytest.mark.parametrize('arg', MACS)
def test_macs(arg, counts):
  assert counts(arg)['macs'] == pytest.approx(MACS[arg], rel=0.01)


def test_macs_exact_resnet20(counts):
  # 3x3x3x16 stem at 32x32, 6 convs per stage, 640 in the classifier.
  stem = 32 * 32 * 16 * 27
  stage1 = 6 * 32 * 32 * 16 * 144
  stage2 = 16 * 16 * 32 * 144 + 5 * 16 * 16 * 32 * 288
  stage3 = 8 * 8 * 64 * 288 + 5 * 8 * 8 * 64 * 576
  rows = {s['name']: s['macs'] for s in counts('cifar10.py:resnet20')['stages']}
  assert rows == dict(
    stem=stem, stage1=stage1, stage2=stage2, stage3=stage3, head=640
  )


def test_stage_output_shapes_resnet50(counts):
  stages = counts('imagenet.py:resnet50')['stages']
  assert [(s['name'], s['output_shape']) for s in stages] == [
    ('stem', [56, 56, 64]),
    ('stage1', [56, 56, 256]),
    ('stage2', [28, 28, 512]),
    ('stage3', [14, 14, 1024]),
    ('stage4', [7, 7, 2048]),
    ('head', [1000]),
  ]


def test_resnet50_d_deep_stem_counts_derived_from_its_layers(counts):
  """ResNet-50-D (He et al. 2019): v1.5 strides, shortcut D, the deep stem.
  The stem's three 3x3 convs (3->32 stride 2, 32->32, 32->64) and their
  BNs replace the 7x7 3->64 conv and its BN; D's average pool adds no
  parameter and its 1x1 projection sees the pooled map, as B's strided
  one sees the same positions."""
  deep_params = 3 * 3 * (3 * 32 + 32 * 32 + 32 * 64) + 2 * (32 + 32 + 64)
  standard_params = 7 * 7 * 3 * 64 + 2 * 64
  v15 = counts('imagenet.py:resnet50,stride=v1.5')
  d = counts('imagenet.py:resnet50,stride=v1.5,stem=deep,shortcut=D')
  assert d['params'] == 25_557_032 - standard_params + deep_params
  assert d['params'] == 25_576_264
  pixels = 112 * 112  # every stem conv's output (the first is strided)
  deep_macs = pixels * 3 * 3 * (3 * 32 + 32 * 32 + 32 * 64)
  standard_macs = pixels * 7 * 7 * 3 * 64
  assert d['macs'] == v15['macs'] - standard_macs + deep_macs
  assert round(d['macs'] / 1e9, 1) == 4.3  # Bag of Tricks, Table 5
  # The public API builds the same network from its options.
  import resnet_jax

  api = resnet_jax.network('resnet50', stride='v1.5', stem='deep', shortcut='D')
  assert counting.count(api, 224)['params'] == 25_576_264


def test_deep_stem_shapes_and_names():
  import jax

  from resnet_jax.model import resnet

  config = load_config('configs/imagenet.py:resnet50,stem=deep')
  model = resnet.build(config.model, 10)
  shapes = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.ShapeDtypeStruct((2, 64, 64, 3), jax.numpy.float32),
  )['params']
  assert [shapes[f'conv_init{i}']['kernel'].shape for i in (1, 2, 3)] == [
    (3, 3, 3, 32),
    (3, 3, 32, 32),
    (3, 3, 32, 64),
  ]
  assert 'conv_init' not in shapes and 'bn_init3' in shapes


def test_summary_table_of_resnet20(counts):
  """The summary command's table: a row per stage in order, its numbers
  with thousands separators, right-aligned in columns of 8, 16, 14, 16."""
  lines = counting.format_table(counts('cifar10.py:resnet20')).splitlines()
  assert [line.split() for line in lines] == [
    ['stage', 'output', 'params', 'MACs'],
    ['stem', '32x32x16', '464', '442,368'],
    ['stage1', '32x32x16', '14,016', '14,155,776'],
    # option A: a block is two 3x3 convs with their BN (scale and bias)
    ['stage2', '16x16x32', '51,072', '12,976,128'],
    ['stage3', '8x8x64', '203,520', '12,976,128'],
    ['head', '10', '650', '640'],  # 64 -> 10 classes
    ['total', '269,722', '40,551,040'],
  ]
  assert {len(line) for line in lines} == {8 + 1 + 16 + 1 + 14 + 1 + 16}
  assert lines[1].startswith('stem ') and lines[1].endswith(' 442,368')
  assert lines[-1].index('269,722') == 8 + 1 + 16 + 1 + 14 - len('269,722')
