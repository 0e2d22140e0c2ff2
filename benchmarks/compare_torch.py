"""Our training step against the same network in plain PyTorch, same
batch, same device, in one command; prints one JSON line with the ratio.

  pip install -r benchmarks/requirements.txt   # PyTorch: not in CI
  python benchmarks/compare_torch.py --config=configs/cifar10.py:resnet20 \
      --config.data.local_dir=data/cifar10-sample
  python benchmarks/compare_torch.py \
      --config=configs/imagenet.py:resnet50,dtype=bfloat16 \
      --config.data.image_folder=DIR

PyTorch gets its best settings: channels-last, bf16 autocast on a GPU when
our config computes in bf16, and torch.compile as well as eager (the faster
is reported). Its step is forward, backward and SGD on one resident batch;
ours also selects and augments its batch (CIFAR) or normalises it
(ImageNet) on the device, so the comparison does not flatter us.
"""

import datetime
import json
import os
import platform
import sys

from absl import flags
import jax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import torch_resnet  # noqa: E402
from resnet_jax import command  # noqa: E402
from resnet_jax import errors  # noqa: E402
from resnet_jax.model import counting  # noqa: E402
from resnet_jax.model import resnet  # noqa: E402
from resnet_jax.train import benchmark  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed steps for each figure.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Untimed steps (compilation).')
_SYNTHETIC = flags.DEFINE_bool(
  'synthetic',
  False,
  'Our step on one random batch, no dataset read (machines without TF).',
)
_COMPILE = flags.DEFINE_enum(
  'torch_compile',
  'both',
  ['both', 'eager', 'compiled'],
  'PyTorch modes to time; the faster is compared.',
)


def main(argv):
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {" ".join(argv[1:])}')
  import torch

  config = _CONFIG.value
  m = config.model
  if m.block != 'standard' or not m.residual or m.cardinality != 1:
    raise errors.ConfigError('the PyTorch reference has standard ResNets only')
  ours = benchmark.step_report(
    config, _STEPS.value, _WARMUP.value, _SYNTHETIC.value
  )

  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  reference = torch_resnet.build(m.family, m.depth, config.data.num_classes)
  flax_model = resnet.build(m, config.data.num_classes)
  ours_params = counting.count(flax_model, config.data.image_size)['params']
  if torch_resnet.num_params(reference) != ours_params:
    raise RuntimeError(
      f'not the same network: {torch_resnet.num_params(reference)} '
      f'parameters in PyTorch, {ours_params} here'
    )
  amp = device.type == 'cuda' and m.dtype == 'bfloat16'
  modes = {'both': (False, True), 'eager': (False,), 'compiled': (True,)}
  timings = {}
  for compiled in modes[_COMPILE.value]:
    name = 'compiled' if compiled else 'eager'
    try:
      timings[name] = torch_resnet.train_images_per_sec(
        torch_resnet.build(m.family, m.depth, config.data.num_classes),
        config.train.batch_size,
        config.data.image_size,
        _STEPS.value,
        _WARMUP.value,
        device=device,
        amp=amp,
        compile_model=compiled,
      )
    except Exception as e:  # torch.compile needs a C++ toolchain on CPU
      timings[name] = f'failed: {type(e).__name__}: {str(e)[:200]}'
  numbers = {k: v for k, v in timings.items() if isinstance(v, float)}
  if not numbers:
    raise RuntimeError(f'PyTorch did not run: {timings}')
  best = max(numbers, key=numbers.get)
  jax_device = jax.devices()[0]
  print(
    json.dumps(
      dict(
        ours_step_images_per_sec=round(ours['step_images_per_sec'], 2),
        torch_images_per_sec=round(numbers[best], 2),
        ours_over_torch=round(ours['step_images_per_sec'] / numbers[best], 3),
        torch_mode=best,
        torch_timings={
          k: round(v, 2) if isinstance(v, float) else v
          for k, v in timings.items()
        },
        torch_amp_bf16=amp,
        torch_threads=torch.get_num_threads(),
        params=ours_params,
        batch_size=config.train.batch_size,
        dtype=m.dtype,
        steps_per_dispatch=config.train.steps_per_dispatch,
        synthetic=_SYNTHETIC.value,
        device_kind=jax_device.device_kind,
        torch_device=str(device),
        jax=jax.__version__,
        torch=torch.__version__,
        host=platform.node(),
        date=datetime.date.today().isoformat(),
      )
    )
  )


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  command.run(main)
