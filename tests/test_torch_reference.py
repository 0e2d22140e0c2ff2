"""The PyTorch reference of benchmarks/ is the same network as ours (its
parameter count), where PyTorch is installed (it is not in CI)."""

import pytest

from resnet_jax.model import counting
from resnet_jax.model import resnet

torch_resnet = pytest.importorskip('benchmarks.torch_resnet')


@pytest.mark.parametrize(
  'family,depth,num_classes,model,size',
  [
    ('cifar', 20, 10, resnet.ResNet20, 32),
    ('cifar', 56, 10, resnet.ResNet56, 32),
    ('imagenet', 50, 1000, resnet.ResNet50, 64),
  ],
)
def test_reference_has_our_parameter_count(
  family, depth, num_classes, model, size
):
  ours = counting.count(model(), size)['params']
  theirs = torch_resnet.num_params(
    torch_resnet.build(family, depth, num_classes)
  )
  assert theirs == ours
