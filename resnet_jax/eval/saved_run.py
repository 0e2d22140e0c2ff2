"""Evaluating a run's newest finalised checkpoint with its own config (or
overrides of it): what `python -m resnet_jax.evaluate` does."""

import jax

from resnet_jax import parallel
from resnet_jax.config import keys
from resnet_jax.data import inputs
from resnet_jax.eval import bn_stats
from resnet_jax.eval import evaluator
from resnet_jax.model import resnet
from resnet_jax.run import saved_config
from resnet_jax.train import saved_state


def evaluate_workdir(
  config,
  workdir: str,
  recompute_bn_batches: int = 0,
  weights: str = 'raw',
  test_set=None,
) -> dict:
  """Metrics of the newest checkpoint in `workdir`, read-only (a run may
  be training there): CIFAR on its eval split, image sets on val with
  data.eval_protocol; first, with `recompute_bn_batches`, the BN
  statistics re-estimated from that many training batches (which needs
  the training data). `weights`: the run's 'raw' weights or 'ema', their
  moving average (where train.ema_decay kept one). `test_set`
  (data/imagenet_variants.TestSet): ImageNet-V2 or ReaL instead of val."""
  keys.check(config)  # the overrides, too
  model = resnet.build(config.model, config.data.num_classes)
  evaluation = evaluator.build(config, model, test_set=test_set)
  shape, mean_shape = saved_config.image_shapes(config)
  mesh = parallel.make_mesh()
  state = saved_state.restore(
    config, workdir, model, shape, mean_shape, mesh, weights
  )
  if recompute_bn_batches:
    data = inputs.for_config(config, workdir)
    if data.kind == 'host':  # each process on its own devices
      state = parallel.localise(evaluation.mesh, state)
    batches = bn_stats.training_batches(
      config, data, state, recompute_bn_batches
    )
    state = bn_stats.recompute(state, model, batches)
  result = evaluation(state)
  if isinstance(evaluation, evaluator.ImageSetEvaluator):
    result['protocol'] = config.data.eval_protocol
    result['test_set'] = evaluation.name
  result['step'] = int(jax.device_get(state.step))
  result['weights'] = weights
  return result
