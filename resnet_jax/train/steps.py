"""The train step and its data-parallel form.

`train_step` is a pure function of its arguments; every hyperparameter
reaches it through the optax transform or a partial bound before
compilation. `sharded_*` compile one step over all devices: jax.jit of a
jax.shard_map over the 1-D mesh axis 'data' (resnet_jax.parallel), with
per-device semantics as pmap had.
"""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import optax

from resnet_jax.data import augment
from resnet_jax.parallel import AXIS
from resnet_jax.train import losses
from resnet_jax.train import train_state
from resnet_jax.train.train_state import TrainState


def train_step(
  state: TrainState,
  images,
  labels,
  teacher=None,
  *,
  model,
  tx,
  lr_fn,
  axis_name=None,
  microbatches: int = 1,
  label_smoothing: float = 0.0,
  ema_decay: float | None = None,
  ema_warmup: bool = False,
  distillation=None,
):
  """One SGD step on a (per-device) batch; returns (state, metrics).

  With `axis_name`, gradients, metrics and BN running statistics are
  averaged over that axis. BN normalises with per-device statistics unless
  the model was built with `bn_axis_name` (synchronised BN). `labels` are
  integer labels or augment.MixedLabels (mixup, CutMix). With `ema_decay`
  the moving average of the weights (state.ema) follows the new weights.
  With `distillation` (distill.Distillation), `teacher`'s weights give
  the logits of the same images that the loss learns from as well.

  microbatches > 1 accumulates the gradient over that many slices of the
  batch, one after another (less memory). Each slice is normalised with
  its own statistics and the running averages are updated once, from the
  mean of the slices' statistics: exactly the step of `microbatches` times
  as many devices with per-device BN.
  """

  def loss_fn(params, x, y):
    logits, updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats},
      x,
      train=True,
      mutable=['batch_stats'],
    )
    if distillation is None:
      loss = losses.train_loss(logits, y, label_smoothing)
    else:
      loss = losses.distillation_loss(
        logits,
        y,
        distillation.logits(teacher, x, state.pixel_mean),
        distillation.temperature,
        distillation.hard_weight,
        label_smoothing,
      )
    return loss.mean(), (logits, updates['batch_stats'])

  params = state.params
  if axis_name is not None:
    # Replicated parameters are invariant over the mesh; differentiating a
    # per-device loss with respect to them would psum the gradients behind
    # our back. Marking them varying gives per-device gradients, which the
    # pmean below averages: pmap's semantics.
    params = jax.lax.pcast(params, axis_name, to='varying')
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def slice_step(x, y):
    (loss, (logits, batch_stats)), grads = grad_fn(params, x, y)
    error = jnp.mean(jnp.argmax(logits, -1) != losses.hard_labels(y))
    # BN's running averages travel as changes: a statistic the model left
    # as it was (frozen BN) stays exactly so, where averaging equal values
    # over devices or slices could round.
    change = jax.tree.map(jnp.subtract, batch_stats, state.batch_stats)
    return grads, change, dict(loss=loss, error=error)

  if microbatches == 1:
    grads, stats_change, metrics = slice_step(images, labels)
  else:
    xs, ys = jax.tree.map(
      lambda a: a.reshape(microbatches, -1, *a.shape[1:]), (images, labels)
    )
    # The first slice outside the loop gives the carry its exact types.
    total, _ = jax.lax.scan(
      lambda acc, xy: (jax.tree.map(jnp.add, acc, slice_step(*xy)), None),
      slice_step(*jax.tree.map(lambda a: a[0], (xs, ys))),
      jax.tree.map(lambda a: a[1:], (xs, ys)),
    )
    grads, stats_change, metrics = jax.tree.map(
      lambda t: t / microbatches, total
    )
  if axis_name is not None:
    grads, stats_change, metrics = jax.lax.pmean(
      (grads, stats_change, metrics), axis_name
    )
  batch_stats = jax.tree.map(jnp.add, state.batch_stats, stats_change)
  # The norm of the gradient that is applied: after averaging.
  metrics['grad_norm_sq'] = optax.tree.norm(grads, squared=True)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  metrics['lr'] = lr_fn(state.step)
  new_params = optax.apply_updates(state.params, updates)
  new_state = state.replace(
    step=state.step + 1,
    params=new_params,
    batch_stats=batch_stats,
    opt_state=opt_state,
  )
  if ema_decay is not None:
    decay = train_state.ema_decay_at(state.step, ema_decay, ema_warmup)
    ema = train_state.update_ema(state.ema, new_params, batch_stats, decay)
    new_state = new_state.replace(ema=ema)
  return new_state, metrics


def sharded_train_step(
  mesh,
  *,
  seed: int,
  global_batch: int,
  augment_images: bool = True,
  num_steps: int = 1,
  mixing: augment.Mixing | None = None,
  **step_options,
):
  """Compiled step(state, images, labels) over the device-resident dataset:
  `num_steps` SGD steps in one call, returning the last one's metrics.

  Each device selects and augments its slice of the global batch itself
  (and mixes it, with `mixing`); only the step counter changes between
  steps, so there is no host work, and several steps per call (a scan)
  save the launch overhead that dominates small CIFAR steps, with the
  same results as one per call. `step_options` go to train_step (model,
  tx, lr_fn, microbatches, label_smoothing, ema_decay, ...).
  """
  local = global_batch // mesh.size
  key = jax.random.key(seed)

  def one_step(state, images, labels, teacher):
    positions = jax.lax.axis_index(AXIS) * local + jnp.arange(local)
    x, y = augment.train_batch(
      images,
      labels,
      state.pixel_mean,
      key,
      state.step,
      global_batch,
      positions,
      augment_images,
    )
    if mixing is not None:
      x, y = augment.mix(key, state.step, positions, x, y, mixing, AXIS)
    return train_step(state, x, y, teacher, axis_name=AXIS, **step_options)

  def per_device(state, images, labels, teacher):
    if num_steps == 1:
      return one_step(state, images, labels, teacher)
    # Unrolled: the loop form differs from single calls in the last bit
    # (XLA optimises a loop body differently), and the difference grows.
    state, metrics = jax.lax.scan(
      lambda s, _: one_step(s, images, labels, teacher),
      state,
      length=num_steps,
      unroll=True,
    )
    return state, jax.tree.map(lambda m: m[-1], metrics)

  step = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(),) * 4, out_specs=(P(), P())
  )
  return _with_teacher_optional(step)


def _with_teacher_optional(step):
  """The compiled step(state, images, labels, teacher=None): the teacher's
  weights (distillation) are an argument, never constants of the step."""

  def call(state, images, labels, teacher=None):
    return step(state, images, labels, teacher)

  return jax.jit(call, donate_argnums=0)


def sharded_batch_train_step(
  mesh,
  *,
  seed: int,
  lighting_std: float,
  mixing: augment.Mixing | None = None,
  **step_options,
):
  """Compiled step(state, images, labels) on host-fed uint8 batches split
  over 'data' (streaming datasets such as ImageNet): normalised, given
  lighting noise (`lighting_std`, 0 for none) and mixed (with `mixing`)
  on the device."""
  key = jax.random.key(seed)

  def per_device(state, images, labels, teacher):
    local = images.shape[0]
    positions = jax.lax.axis_index(AXIS) * local + jnp.arange(local)
    x = augment.normalise_and_light(
      images, state.pixel_mean, key, state.step, positions, lighting_std
    )
    if mixing is not None:
      x, labels = augment.mix(
        key, state.step, positions, x, labels, mixing, AXIS
      )
    return train_step(state, x, labels, teacher, axis_name=AXIS, **step_options)

  batch = P(AXIS)
  step = jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(P(), batch, batch, P()),
    out_specs=(P(), P()),
  )
  return _with_teacher_optional(step)
