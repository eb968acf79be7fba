"""The pure training step, `step(state, batch) -> (state, metrics)`, and its compiled form.

Imports only JAX, Flax, optax and the model/optimiser modules (no TensorFlow, TFDS or clu), so
benchmarks and accelerator machines can use it without the input pipeline's dependencies.

Gradient accumulation (`config.grad_accum_steps` = k > 1) splits the global batch into k
micro-batches inside the compiled step (`lax.scan`): micro-batch j holds examples j, j + k,
j + 2k, ... of the global batch, so its membership does not depend on the number of devices or
processes and each device keeps its own examples (no data moves between devices). Gradients and
metrics are averaged over the micro-batches and the optimiser updates once.

BatchNorm under accumulation: each micro-batch is normalised with its own batch statistics
("ghost" batches of batch_size / k), as PyTorch accumulation does, so the gradient is not the
full-batch gradient unless the micro-batches have identical statistics. The running statistics
are updated once per optimiser step with the mean of the micro-batch statistics (starting from
the same running values), so their momentum per optimiser step does not depend on k and the
running mean matches the unaccumulated step's exactly; the running variance is the mean of the
micro-batch variances, lower than the full-batch variance by the variance of the micro-batch
means. Without batch coupling (or with micro-batches of identical statistics) the accumulated
update equals the unaccumulated one up to float rounding.
"""

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec

from wrna_jax import parallel
from wrna_jax.errors import ConfigError
from wrna_jax.models import factory
from wrna_jax.optim import learning_rate_schedule
from wrna_jax.state import TrainState

Metrics = dict[str, jax.Array]


def loss_and_grads(params: Any, batch_stats: Any, batch: Mapping[str, jax.Array], dropout_rng: jax.Array,
                   *, model: Any, regularizer_weight: float) -> tuple[Any, Any, Metrics]:
    """Gradient of the mean NLL plus the weighted diversity regulariser on `batch`, the updated
    BatchNorm statistics and the batch's metrics (all float32, whatever the compute dtype)."""

    def loss_fn(params):
        out, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                   batch["image"], train=True, mutable=["batch_stats"],
                                   rngs={"dropout": dropout_rng})
        log_probs = out.log_probs.astype(jnp.float32)
        nll = -jnp.mean(jnp.take_along_axis(log_probs, batch["label"][:, None], axis=1))
        regularizer = jnp.asarray(out.regularizer, jnp.float32)
        accuracy = jnp.mean(jnp.argmax(log_probs, -1) == batch["label"])
        loss = nll + regularizer_weight * regularizer
        return loss, (updates["batch_stats"], {"loss": loss, "nll": nll, "regularizer": regularizer,
                                               "accuracy": accuracy})

    grads, (new_stats, metrics) = jax.grad(loss_fn, has_aux=True)(params)
    return grads, new_stats, metrics


def split_micro_batches(batch: Mapping[str, jax.Array], grad_accum_steps: int,
                        sharding: NamedSharding | None = None) -> dict[str, jax.Array]:
    """(B, ...) arrays -> (k, B / k, ...): micro-batch j is examples j, j + k, j + 2k, ...

    With contiguous per-device shards of a multiple of k examples, every device keeps its own
    examples; `sharding` (batch axis second) pins that layout for the compiler.
    """
    k = grad_accum_steps

    def split(x):
        micro = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
        return micro if sharding is None else jax.lax.with_sharding_constraint(micro, sharding)

    return {key: split(value) for key, value in batch.items()}


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, model: Any,
               regularizer_weight: float, schedule: Any, grad_accum_steps: int = 1,
               micro_batch_sharding: NamedSharding | None = None) -> tuple[TrainState, Metrics]:
    """One SGD step on the combined NLL plus the weighted diversity regulariser.

    With `grad_accum_steps` = k > 1 the batch is processed as k micro-batches (module
    docstring) and the optimiser steps once on the mean gradient. A non-finite loss, gradient or
    BatchNorm statistic leaves parameters, statistics and optimiser state unchanged and is
    reported in `metrics['nonfinite']`, so the host can stop with the last good state.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    compute = functools.partial(loss_and_grads, model=model, regularizer_weight=regularizer_weight)
    if grad_accum_steps == 1:
        grads, batch_stats, metrics = compute(state.params, state.batch_stats, batch, dropout_rng)
    else:
        micro = split_micro_batches(batch, grad_accum_steps, micro_batch_sharding)
        shapes = jax.eval_shape(compute, state.params, state.batch_stats,
                                {key: value[0] for key, value in micro.items()}, dropout_rng)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def accumulate(totals, inputs):
            index, micro_batch = inputs
            out = compute(state.params, state.batch_stats, micro_batch,
                          jax.random.fold_in(dropout_rng, index))
            return jax.tree.map(jnp.add, totals, out), None

        # Unrolled: XLA:CPU runs the rolled loop many times slower than the same micro-batches in
        # straight-line code (benchmarks/grad_accum.py, docs/benchmarks.md); k is small, so the
        # longer compilation costs little.
        totals, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(grad_accum_steps), micro), unroll=True)
        grads, batch_stats, metrics = jax.tree.map(lambda t: t / grad_accum_steps, totals)

    updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    # The loss alone does not show every bad step: a batch of NaN images gives a finite loss on
    # XLA:CPU, and NaN gradients and BatchNorm statistics (tests/test_train.py).
    finite = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(optax.global_norm(grads))
              & jnp.isfinite(optax.global_norm(batch_stats)))
    keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = updated.replace(
        params=keep_if_finite(updated.params, state.params),
        batch_stats=keep_if_finite(updated.batch_stats, state.batch_stats),
        opt_state=keep_if_finite(updated.opt_state, state.opt_state))
    metrics = {**metrics, "learning_rate": schedule(state.step),
               "nonfinite": jnp.where(finite, -1, state.step)}
    return new_state, metrics


def check_grad_accum(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """`config.grad_accum_steps`, or a clear error when the batch cannot be split that way."""
    k = config.grad_accum_steps
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"config.grad_accum_steps={k!r}: use a positive integer (1 = no accumulation).")
    unit = num_devices * k
    if config.batch_size % unit:
        lower = config.batch_size - config.batch_size % unit
        raise ConfigError(f"batch_size={config.batch_size} is not divisible by {num_devices} device(s) x "
                          f"grad_accum_steps={k} = {unit}: use a multiple of {unit} "
                          f"(e.g. {lower or unit} or {lower + unit}) or change grad_accum_steps.")
    group = config.model.bn_group_size
    if group is not None and (config.batch_size // k) % group:
        raise ConfigError(f"model.bn_group_size={group} does not divide the {config.batch_size // k} examples "
                          f"of a step (batch_size={config.batch_size} / grad_accum_steps={k}): choose a "
                          "group size that divides it, or None for statistics over the whole batch.")
    return k


def configured_train_step(config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh,
                          steps_per_epoch: int) -> Callable[[TrainState, Mapping[str, jax.Array]],
                                                            tuple[TrainState, Metrics]]:
    """`train_step` with the config's model, regulariser weight, schedule and accumulation bound
    (not compiled: `make_train_step` compiles it)."""
    grad_accum_steps = check_grad_accum(config, mesh.devices.size)
    return functools.partial(
        train_step, model=model, regularizer_weight=factory.regularizer_weight(config.attention),
        schedule=learning_rate_schedule(config, steps_per_epoch), grad_accum_steps=grad_accum_steps,
        micro_batch_sharding=NamedSharding(mesh, PartitionSpec(None, parallel.DATA_AXIS)))


def make_train_step(config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh,
                    steps_per_epoch: int):
    """`train_step` compiled for the mesh (batch sharded, state replicated, state donated)."""
    replicated = parallel.replicated(mesh)
    return jax.jit(configured_train_step(config, model, mesh, steps_per_epoch),
                   in_shardings=(replicated, parallel.batch_sharding(mesh)),
                   out_shardings=(replicated, replicated), donate_argnums=0)
