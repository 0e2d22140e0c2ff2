"""Where XLA's CPU training step spends its time: one 3x3 convolution's
forward, input gradient and filter gradient, and ResNet-20's forward
against its gradient; with PyTorch's forward+backward of the same conv
where PyTorch is installed. Prints one JSON line (milliseconds).

  python benchmarks/conv_grads.py [--batch=128]
"""

import datetime
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resnet_jax.model import resnet  # noqa: E402

_BATCH = flags.DEFINE_integer('batch', 128, 'Images per call.')
_REPEATS = flags.DEFINE_integer('repeats', 20, 'Timed calls per figure.')


def milliseconds(fn, *args) -> float:
  jax.block_until_ready(fn(*args))  # compile
  start = time.perf_counter()
  for _ in range(_REPEATS.value):
    out = fn(*args)
  jax.block_until_ready(out)
  return 1e3 * (time.perf_counter() - start) / _REPEATS.value


def conv_figures(batch: int) -> dict:
  """A 3x3, 16 -> 16 channel conv on 32x32 maps (CIFAR's first stage)."""
  x = jnp.ones((batch, 32, 32, 16))
  k = jnp.ones((3, 3, 16, 16))

  def conv(x, k):
    return jax.lax.conv_general_dilated(
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )

  return dict(
    conv_forward_ms=milliseconds(jax.jit(conv), x, k),
    conv_input_grad_ms=milliseconds(
      jax.jit(jax.grad(lambda x, k: conv(x, k).sum())), x, k
    ),
    conv_filter_grad_ms=milliseconds(
      jax.jit(jax.grad(lambda k, x: conv(x, k).sum())), k, x
    ),
  )


def network_figures(batch: int) -> dict:
  """ResNet-20 in training mode: the loss, and its gradient."""
  model = resnet.ResNet20()
  x = jnp.ones((batch, 32, 32, 3))
  y = jnp.zeros(batch, jnp.int32)
  variables = model.init(jax.random.key(0), x)

  def loss(params):
    logits, _ = model.apply(
      {'params': params, 'batch_stats': variables['batch_stats']},
      x,
      train=True,
      mutable=['batch_stats'],
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  params = variables['params']
  return dict(
    resnet20_forward_ms=milliseconds(jax.jit(loss), params),
    resnet20_gradient_ms=milliseconds(jax.jit(jax.grad(loss)), params),
  )


def torch_figures(batch: int) -> dict:
  try:
    import torch
  except ImportError:
    return {}
  x = torch.ones(batch, 16, 32, 32).to(memory_format=torch.channels_last)
  x.requires_grad_()
  conv = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False)
  conv = conv.to(memory_format=torch.channels_last)
  conv(x).sum().backward()  # warm up
  start = time.perf_counter()
  for _ in range(_REPEATS.value):
    conv(x).sum().backward()
  seconds = (time.perf_counter() - start) / _REPEATS.value
  return dict(
    torch_conv_forward_backward_ms=1e3 * seconds,
    torch=torch.__version__,
    torch_threads=torch.get_num_threads(),
  )


def main(argv):
  del argv
  report = dict(batch=_BATCH.value)
  report.update(conv_figures(_BATCH.value))
  report.update(network_figures(_BATCH.value))
  report.update(torch_figures(_BATCH.value))
  report = {
    k: round(v, 2) if isinstance(v, float) else v for k, v in report.items()
  }
  report.update(
    device_kind=jax.devices()[0].device_kind,
    jax=jax.__version__,
    xla_flags=os.environ.get('XLA_FLAGS', ''),
    host=platform.node(),
    date=datetime.date.today().isoformat(),
  )
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
