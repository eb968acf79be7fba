"""The training state and its creation, shared by training and evaluation."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training import train_state

from wrna_jax import optim, parallel
from wrna_jax.models.layers import initial_bn_scales


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, optimiser and its state) plus the BatchNorm statistics
    and the raw uint32 dropout key (folded with the step inside train_step)."""

    batch_stats: Any
    rng: jax.Array


def init_variables(model: Any, input_shape: tuple[int, ...], seed: int,
                   sharding: jax.sharding.Sharding | None = None) -> Any:
    """The model's initial variables (params, batch_stats) from `seed`, as training starts, with
    BatchNorm scales as the model's `bn_scale_init` says (layers.initial_bn_scales).

    One compiled program per model (the key is an argument), so the persistent compilation
    cache shares it between runs and tests; the key goes in as a numpy array, the same value on
    every process.
    """
    init_rng = jax.random.split(jax.random.PRNGKey(seed))[0]
    scale_init = getattr(model, "bn_scale_init", "ones")

    def init(rng: jax.Array) -> Any:
        variables = model.init(rng, jnp.zeros((1, *input_shape), jnp.float32), train=False)
        if scale_init == "ones":
            return variables
        params = initial_bn_scales(variables["params"], jax.random.fold_in(rng, 1), scale_init)
        return {**variables, "params": params}

    return jax.jit(init, out_shardings=sharding)(np.asarray(init_rng))


def abstract_variables(model: Any, input_shape: tuple[int, ...]) -> Any:
    """The shapes and dtypes of the model's variables, without computing them."""
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape), jnp.float32),
                                             train=False))


def create_train_state(config: ml_collections.ConfigDict, model: Any, input_shape: tuple[int, ...],
                       mesh: jax.sharding.Mesh, steps_per_epoch: int) -> TrainState:
    """Initialises parameters from `config.seed`, replicated over the mesh."""
    tx = optim.create_optimizer(config, steps_per_epoch, model.backbone.classifier)
    replicated = parallel.replicated(mesh)
    variables = init_variables(model, input_shape, config.seed, replicated)
    dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed))[1]

    def assemble(variables: Any, rng: jax.Array) -> TrainState:
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                                 batch_stats=variables.get("batch_stats", {}), rng=rng)

    # The optimiser state is a second, cheap program: the initialisation stays shareable.
    return jax.jit(assemble, out_shardings=replicated)(variables, np.asarray(dropout_rng))
