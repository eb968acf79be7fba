"""The training state and its creation, shared by training and evaluation."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from wrna_jax import optim, parallel


class TrainState(flax.struct.PyTreeNode):
    """Everything a step changes; `tx` (static) is the optimiser that produced `opt_state`."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key for dropout; folded with the step inside train_step
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def init_variables(model: Any, input_shape: tuple[int, ...], seed: int,
                   sharding: jax.sharding.Sharding | None = None) -> Any:
    """The model's initial variables (params, batch_stats) from `seed`, as training starts.

    One compiled program per model (the key is an argument), so the persistent compilation
    cache shares it between runs and tests; the key goes in as a numpy array, the same value on
    every process.
    """
    init_rng = jax.random.split(jax.random.PRNGKey(seed))[0]

    def init(rng: jax.Array) -> Any:
        return model.init(rng, jnp.zeros((1, *input_shape), jnp.float32), train=False)

    return jax.jit(init, out_shardings=sharding)(np.asarray(init_rng))


def create_train_state(config: ml_collections.ConfigDict, model: Any, input_shape: tuple[int, ...],
                       mesh: jax.sharding.Mesh, steps_per_epoch: int) -> TrainState:
    """Initialises parameters from `config.seed`, replicated over the mesh."""
    tx = optim.create_optimizer(config, steps_per_epoch, model.backbone.classifier)
    replicated = parallel.replicated(mesh)
    variables = init_variables(model, input_shape, config.seed, replicated)
    dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed))[1]

    def assemble(variables: Any, rng: jax.Array) -> TrainState:
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                          rng=rng, tx=tx)

    # The optimiser state is a second, cheap program: the initialisation stays shareable.
    return jax.jit(assemble, out_shardings=replicated)(variables, np.asarray(dropout_rng))
