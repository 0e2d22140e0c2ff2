"""Figure 7's response statistic and the README's results section
."""

import json
import os
import re

import jax
import numpy as np
import pytest

from resnet_jax.errors import ConfigError
from resnet_jax.model import resnet
from resnet_jax.paper import responses
from resnet_jax.paper import results
from tests.helpers import REPO
from tests.helpers import load_config


def test_layer_stds_are_per_channel_stds_averaged_over_channels():
  config = load_config('configs/cifar10.py:plain8')
  model = resnet.build(config.model, 10)
  x = jax.random.normal(jax.random.key(0), (10, 8, 8, 3)) * 50
  variables = model.init(jax.random.key(1), x)
  # Moving averages away from (0, 1), so that inference-mode BN matters.
  variables = jax.tree.map(lambda v: v * 1.5 + 0.1, variables)
  # Batches of 4 (4, 4, 2): the statistics are accumulated across them.
  stds = responses.layer_stds(model, variables, x, batch_size=4)
  layers = [
    np.asarray(r, np.float64)
    for _, block in resnet.block_responses(model, variables, x)
    for r in block
  ]
  assert len(stds) == len(layers) == 6  # 3 blocks of two 3x3 layers
  expected = [r.std(axis=(0, 1, 2)).mean() for r in layers]
  np.testing.assert_allclose(stds, expected, rtol=1e-5)


def _workdir(tmp_path, name):
  folder = tmp_path / 'docs' / name
  folder.mkdir(parents=True)
  (folder / 'experiment.json').write_text(
    json.dumps(
      dict(
        experiment=name,
        description=f'{name} described',
        command=f'python -m resnet_jax.reproduce {name} --workdir=x',
      )
    )
  )
  (folder / 'ledger.md').write_text(f'| model |\n| --- |\n| {name}-net |\n')
  (folder / 'curves.png').write_bytes(b'png')
  return folder


def test_section_replaced_between_markers_rest_untouched(tmp_path):
  one = _workdir(tmp_path, 'cifar_one')
  two = _workdir(tmp_path, 'cifar_two')
  (two / 'NOTES.md').write_text('What it shows.\n')
  readme = tmp_path / 'README.md'
  readme.write_text(
    f'# Title\n\nbefore\n\n{results.BEGIN}\nold text\n{results.END}\n\nafter\n'
  )
  new = results.section([str(one), str(two)], str(tmp_path))
  text = results.replace_section(readme.read_text(), new)
  assert text.startswith('# Title\n\nbefore\n\n' + results.BEGIN)
  assert text.endswith(results.END + '\n\nafter\n')
  assert 'old text' not in text
  assert '### cifar_one: cifar_one described' in text
  assert '| cifar_two-net |' in text and 'What it shows.' in text
  assert '![curves](docs/cifar_two/curves.png)' in text
  assert 'responses' not in text  # no such plot in the folders
  assert results.replace_section(text, new) == text  # idempotent
  with pytest.raises(ConfigError, match='markers'):
    results.replace_section('# no markers\n', new)
  with pytest.raises(ConfigError, match='not a reproduce workdir'):
    results.section([str(tmp_path)], str(tmp_path))


def test_readme_results_are_the_committed_ledgers():
  """The README's results section is exactly what the command makes from
  the folders it names: edit the ledgers, not the README."""
  with open(os.path.join(REPO, 'README.md')) as f:
    text = f.read()
  current = text[text.index(results.BEGIN) : text.index(results.END)]
  folders = re.findall(r'\(folder `([^`]+)`\)', current)
  assert folders, 'the README quotes no results folder'
  made = results.section([os.path.join(REPO, f) for f in folders], REPO)
  assert results.replace_section(text, made) == text
