"""Per-stage output shapes, parameters and multiply-accumulates of a network,
counted from its layers' shapes."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp


def _group(module_name: str) -> str:
  """Top-level module name -> row of the table ('stem', 'stage2', 'head')."""
  match = re.match(r'(stage\d+)_block\d+$', module_name)
  if match:
    return match.group(1)
  return 'stem' if module_name.endswith('_init') else 'head'


def count(model: nn.Module, image_size: int) -> dict:
  """{'params', 'macs', 'stages': [...]} for one image, from shapes alone."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  rows = {}  # group -> {'params', 'macs', 'in', 'out'}

  def row(name):
    return rows.setdefault(_group(name), dict(params=0, macs=0))

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != '__call__' or not module.path:
      return out
    r = row(module.path[0])
    if len(module.path) == 1:
      r.setdefault('in', args[0].shape)
      r['out'] = out.shape
    if isinstance(module, nn.Conv):
      taps = math.prod(module.kernel_size) * (
        args[0].shape[-1] // module.feature_group_count
      )
      r['macs'] += math.prod(out.shape[1:]) * taps
    elif isinstance(module, nn.Dense):
      r['macs'] += args[0].shape[-1] * module.features
    return out

  # One trace: init calls every layer once, as the forward pass does (a
  # ResNet-1202 takes seconds to trace).
  with nn.intercept_methods(record):  # fills `rows` in call order
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
  for name, tree in variables['params'].items():
    row(name)['params'] += sum(
      math.prod(p.shape) for p in jax.tree.leaves(tree)
    )
  names = list(rows)
  stages = []
  for i, name in enumerate(names):
    r = rows[name]
    # The stem ends in a max pool, not a module: its output is what the
    # first stage receives.
    out = rows[names[i + 1]]['in'] if name == 'stem' else r['out']
    stages.append(
      dict(
        name=name,
        output_shape=list(out[1:]),
        params=r['params'],
        macs=r['macs'],
      )
    )
  return dict(
    params=sum(s['params'] for s in stages),
    macs=sum(s['macs'] for s in stages),
    stages=stages,
  )


def format_table(summary: dict) -> str:
  lines = [f'{"stage":<8} {"output":>16} {"params":>14} {"MACs":>16}']
  for s in summary['stages']:
    shape = 'x'.join(map(str, s['output_shape']))
    lines.append(
      f'{s["name"]:<8} {shape:>16} {s["params"]:>14,} {s["macs"]:>16,}'
    )
  lines.append(
    f'{"total":<8} {"":>16} {summary["params"]:>14,} {summary["macs"]:>16,}'
  )
  return '\n'.join(lines)
