"""The paper's experiments as sets of training runs, for reproduce.py.

Each run is a config file argument (what `train.py --config=` takes) and
the paper's error for it (%, CIFAR-10 test or ImageNet 10-crop top-1
validation), where the paper tabulates one. An experiment of your own is
a Python file with a dict EXPERIMENTS of them, named on the command line
as FILE.py:NAME (`load`).
"""

import dataclasses
import importlib.util
import os

from resnet_jax.errors import ConfigError
from resnet_jax.launch.task import PlannedRun


@dataclasses.dataclass(frozen=True)
class Experiment:
  description: str
  runs: tuple[PlannedRun, ...]
  # 'curves' (Figure 6's style) and 'responses' (Figure 7's: needs CIFAR).
  plots: tuple[str, ...] = ('curves',)


def _cifar(name, error=None):
  return PlannedRun(name, f'configs/cifar10.py:{name}', error)


def _imagenet(name, error=None):
  return PlannedRun(
    name.replace(',shortcut=', '_'), f'configs/imagenet.py:{name}', error
  )


# Table 6, section 4.2: test error (%) on CIFAR-10.
TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
_PLAIN_DEPTHS = (20, 32, 44, 56)  # Figure 6, left

# "Bag of Tricks" (He, Zhang et al. 2019), Tables 3, 5 and 6: ResNet-50's
# top-1 validation error (%, centre crop) as each trick is added; the
# ResNet-152-D teacher of the distillation rows, which the paper gives no
# number for, trains first.
BAG_OF_TRICKS = {
  'baseline': 100 - 75.87,
  'efficient': 100 - 76.21,
  'resnet_d': 100 - 77.16,
  'cosine': 100 - 77.91,
  'label_smoothing': 100 - 78.31,
  'distill': 100 - 78.67,
  'mixup': 100 - 79.15,
  'mixup_distill': 100 - 79.29,
  'teacher': None,
}
_DISTILLED = ('distill', 'mixup_distill')


def _bag_of_tricks(row, error, family=''):
  return PlannedRun(
    row,
    f'configs/bag_of_tricks.py:{row}{family}',
    error,
    'center',
    teacher='teacher' if row in _DISTILLED else None,
  )

EXPERIMENTS = {
  'cifar_table6': Experiment(
    'CIFAR-10 ResNets of Table 6 (option A), 20 to 110 layers',
    tuple(_cifar(f'resnet{d}', TABLE6[d]) for d in (20, 32, 44, 56, 110)),
  ),
  'cifar_table6_1202': Experiment(
    "Table 6's ResNet-1202",
    (_cifar('resnet1202', TABLE6[1202]),),
  ),
  'cifar_figure6': Experiment(
    'Figure 6: plain nets (20-56) against ResNets (20-110) on CIFAR-10',
    tuple(_cifar(f'plain{d}') for d in _PLAIN_DEPTHS)
    + tuple(_cifar(f'resnet{d}', TABLE6[d]) for d in (20, 32, 44, 56, 110)),
    plots=('curves', 'responses'),
  ),
  'cifar_figure7': Experiment(
    "Figure 7: std of each layer's responses, plain and residual 20/56/110",
    tuple(_cifar(f'plain{d}') for d in (20, 56))
    + tuple(_cifar(f'resnet{d}', TABLE6[d]) for d in (20, 56, 110)),
    plots=('curves', 'responses'),
  ),
  'cifar_shortcuts': Experiment(
    'Shortcut options A/B/C on CIFAR-10 ResNet-20/56/110',
    tuple(
      PlannedRun(
        f'resnet{d}_{s}',
        f'configs/cifar10.py:resnet{d},shortcut={s}',
        TABLE6[d] if s == 'A' else None,
      )
      for d in (20, 56, 110)
      for s in 'ABC'
    ),
  ),
  'bag_of_tricks': Experiment(
    '"Bag of Tricks" (2019): ResNet-50 from the baseline to ResNet-50-D '
    'with cosine decay, label smoothing, distillation from a ResNet-152-D '
    'and mixup, one trick a run',
    tuple(_bag_of_tricks(r, e) for r, e in BAG_OF_TRICKS.items()),
  ),
  'bag_of_tricks_cifar': Experiment(
    '"Bag of Tricks" on CIFAR-10: ResNet-20 from the 2015 recipe, one trick '
    'a run (the teacher a ResNet-110)',
    tuple(
      _bag_of_tricks(row, None, ',family=cifar') for row in BAG_OF_TRICKS
    ),
  ),
  'imagenet_table2': Experiment(
    'Table 2: plain against residual (A) 18 and 34 layers, ImageNet',
    (
      _imagenet('plain18', 27.94),
      _imagenet('plain34', 28.54),
      _imagenet('resnet18,shortcut=A', 27.88),
      _imagenet('resnet34,shortcut=A', 25.03),
    ),
  ),
  'imagenet_table3': Experiment(
    'Table 3: shortcuts A/B/C on ResNet-34, and ResNet-50/101/152 (B)',
    (
      _imagenet('resnet34,shortcut=A', 25.03),
      _imagenet('resnet34,shortcut=B', 24.52),
      _imagenet('resnet34,shortcut=C', 24.19),
      _imagenet('resnet50', 22.85),
      _imagenet('resnet101', 21.75),
      _imagenet('resnet152', 21.43),
    ),
  ),
}


def load(name: str) -> Experiment:
  """A built-in experiment by name, or FILE.py:NAME, the EXPERIMENTS[NAME]
  of a Python file of your own."""
  if name in EXPERIMENTS:
    return EXPERIMENTS[name]
  path, sep, key = name.rpartition(':')
  if not sep or not path.endswith('.py'):
    raise ConfigError(
      'name one experiment: '
      + ', '.join(EXPERIMENTS)
      + ', or FILE.py:NAME (the EXPERIMENTS dict of a file of yours)'
    )
  if not os.path.isfile(path):
    raise ConfigError(f'{name}: no file {path}')
  spec = importlib.util.spec_from_file_location('experiments_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  found = getattr(module, 'EXPERIMENTS', {})
  if key not in found:
    raise ConfigError(
      f'{name}: {path} has no EXPERIMENTS[{key!r}]; it has: '
      + (', '.join(found) or 'none')
    )
  return found[key]
