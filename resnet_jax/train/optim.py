"""SGD with momentum and the paper's learning-rate schedules.

Schedules are configured in the paper's units (iterations for CIFAR,
epochs for ImageNet) and converted to optimizer steps here, in `to_steps`
and nowhere else. Weight decay lives in the optimizer, never in the step.
"""

import flax
import jax.numpy as jnp
import optax

from resnet_jax.errors import ConfigError


def to_steps(value, unit: str, steps_per_epoch: int) -> int:
  """A duration in the config's unit ('steps' or 'epochs') as steps."""
  if unit == 'steps':
    return int(value)
  if unit == 'epochs':
    return int(round(value * steps_per_epoch))
  raise ConfigError(f'train.unit={unit!r} is not one of steps, epochs')


def base_lr(optim_cfg, batch_size: int) -> float:
  """The peak learning rate, scaled linearly with the batch if asked
  (Goyal et al. 2017: lr proportional to batch size)."""
  if optim_cfg.linear_scaling:
    return optim_cfg.lr * batch_size / optim_cfg.base_batch_size
  return optim_cfg.lr


def schedule(config, steps_per_epoch: int) -> optax.Schedule:
  """Learning rate at each step: warm-up, then step or cosine decay."""
  o, unit = config.optim, config.train.unit
  lr = base_lr(o, config.train.batch_size)
  total = to_steps(config.train.length, unit, steps_per_epoch)
  warmup_steps = to_steps(o.warmup_steps, unit, steps_per_epoch)
  if o.schedule == 'step':
    boundaries = [to_steps(b, unit, steps_per_epoch) for b in o.lr_boundaries]
    main = optax.piecewise_constant_schedule(
      lr, {b: o.lr_decay_factor for b in boundaries}
    )
  elif o.schedule == 'cosine':
    # Over the steps after the warm-up, from the peak to 0 at the end, as
    # "Bag of Tricks" and its authors' GluonCV do (timm's default instead
    # starts the cosine at step 0, under the warm-up).
    cosine = optax.cosine_decay_schedule(lr, max(total - warmup_steps, 1))

    def main(count):
      return cosine(count - warmup_steps)

  else:
    raise ConfigError(
      f'optim.schedule={o.schedule!r} is not one of step, cosine'
    )
  if o.warmup not in ('constant', 'linear'):
    raise ConfigError(
      f'optim.warmup={o.warmup!r} is not one of constant, linear'
    )
  if not warmup_steps:
    return main

  def with_warmup(count):
    if o.warmup == 'constant':  # ResNet-110: 0.01 until iteration 400
      warm = jnp.full_like(count, o.warmup_lr, dtype=jnp.float32)
    else:  # Goyal et al.: ramp linearly to the peak
      warm = lr * (count + 1) / warmup_steps
    return jnp.where(count < warmup_steps, warm, main(count))

  return with_warmup


def _decay_mask(which: str):
  """None (every parameter), or a function of the tree it is given that
  marks the conv and dense kernels: a function, not a tree, because
  fine-tuning's optax.multi_transform hands each group a tree of its own
  (a mask built for the whole tree would not match the head's)."""
  if which == 'all':  # the paper: weight decay 1e-4 on every parameter
    return None
  if which == 'kernels':  # conv and dense kernels only: no BN, no bias
    return _kernels
  raise ConfigError(
    f'optim.weight_decay_on={which!r} is not one of all, kernels'
  )


def _kernels(tree):
  flat = flax.traverse_util.flatten_dict(tree)
  return flax.traverse_util.unflatten_dict(
    {k: k[-1] == 'kernel' for k in flat}
  )


def optimizer(config, params, steps_per_epoch: int):
  """(optax transform, schedule). optim.optimizer: 'sgd' (the paper's),
  'adamw' or 'lars'; gradients clipped to optim.clip_grad_norm first if
  set, by their norm over every parameter (outside fine-tuning's head
  and backbone groups, which each see only their own)."""
  o = config.optim
  lr = schedule(config, steps_per_epoch)
  if o.optimizer not in OPTIMIZERS:
    raise ConfigError(
      f'optim.optimizer={o.optimizer!r} is not one of {", ".join(OPTIMIZERS)}'
    )
  tx = OPTIMIZERS[o.optimizer](o, lr)
  if 'finetune' in config:  # only the fine-tuning config has the section
    tx = _head_and_backbone(tx, config.finetune, params)
  if o.clip_grad_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(o.clip_grad_norm), tx)
  return tx, lr


def _sgd(o, lr):
  """SGD with momentum. L2 weight decay by default: the decay is added to
  the gradient before momentum, as Caffe's SGD does; decoupled decay
  (SGDW) adds it after momentum instead."""
  decay = optax.add_decayed_weights(
    o.weight_decay, _decay_mask(o.weight_decay_on)
  )
  momentum = optax.trace(decay=o.momentum, nesterov=o.nesterov)
  steps = [momentum, decay] if o.decoupled_weight_decay else [decay, momentum]
  return optax.chain(*steps, optax.scale_by_learning_rate(lr))


def _adamw(o, lr):
  """AdamW (Loshchilov & Hutter 2019): Adam's update, the weight decay
  added after it, both scaled by the learning rate."""
  return optax.adamw(
    lr,
    b1=o.adam_b1,
    b2=o.adam_b2,
    eps=o.adam_eps,
    weight_decay=o.weight_decay,
    mask=_decay_mask(o.weight_decay_on),
  )


def _lars(o, lr):
  """LARS (You et al. 2017) as MLPerf's ResNet-50 uses it for batches of
  3,200 and more: each kernel's step scaled by its trust ratio,
  coefficient * ||w|| / ||g + decay w||, with momentum; BN parameters
  and biases take neither the weight decay nor the trust ratio."""
  kernels = _decay_mask('kernels')
  return optax.lars(
    lr,
    weight_decay=o.weight_decay,
    weight_decay_mask=kernels,
    trust_coefficient=o.lars_trust_coefficient,
    trust_ratio_mask=kernels,
    momentum=o.momentum,
    nesterov=o.nesterov,
  )


OPTIMIZERS = {'sgd': _sgd, 'adamw': _adamw, 'lars': _lars}


def _head_and_backbone(tx, finetune, params):
  """Fine-tuning's two parameter groups: the new head learns with `tx`;
  the backbone with `tx` scaled by finetune.backbone_lr_scale ('full'),
  or not at all ('linear_probe', which then keeps no momentum for it)."""
  if finetune.mode == 'linear_probe':
    backbone = optax.set_to_zero()
  elif finetune.mode == 'full':  # (backbone_lr_scale > 0: config/keys.py)
    backbone = optax.chain(tx, optax.scale(finetune.backbone_lr_scale))
  else:
    raise ConfigError(
      f'finetune.mode={finetune.mode!r} is not one of full, linear_probe'
    )
  labels = {k: 'head' if k == 'head' else 'backbone' for k in params}
  return optax.multi_transform({'head': tx, 'backbone': backbone}, labels)
