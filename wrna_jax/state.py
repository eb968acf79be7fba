"""The training state and its creation, shared by training and evaluation."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
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


def create_train_state(config: ml_collections.ConfigDict, model: Any, input_shape: tuple[int, ...],
                       mesh: jax.sharding.Mesh, steps_per_epoch: int) -> TrainState:
    """Initialises parameters from `config.seed`, replicated over the mesh."""
    tx = optim.create_optimizer(config, steps_per_epoch, model.backbone.classifier)
    init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed))

    def init() -> TrainState:
        variables = model.init(init_rng, jnp.zeros((1, *input_shape), jnp.float32), train=False)
        params = variables["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                          rng=dropout_rng, tx=tx)

    return jax.jit(init, out_shardings=parallel.replicated(mesh))()
