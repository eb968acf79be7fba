"""Optimiser and learning-rate schedules (optax), with a higher rate for the new parts.

As in the paper and the released code, the attention modules, the gates and the backbone's
classifier learn `head_lr_multiplier` times faster than the (usually pretrained) backbone.
SGD follows PyTorch: weight decay is added to the gradient, then (Nesterov) momentum, then the
step is scaled by the learning rate of the parameter's group.
"""

from typing import Any, Mapping

import flax
import optax

from wrna_jax.errors import ConfigError

SCHEDULES = ("constant", "steps", "every")


def learning_rate_schedule(config: Mapping[str, Any], steps_per_epoch: int) -> optax.Schedule:
    """The backbone's learning rate per step, from `config.optimizer` and `config.schedule`."""
    base = float(config["optimizer"]["learning_rate"])
    schedule = config["schedule"]
    kind = schedule["kind"]
    if kind == "constant":
        main = optax.constant_schedule(base)
    elif kind == "steps":
        boundaries = {int(round(epoch * steps_per_epoch)): float(schedule["factor"])
                      for epoch in schedule["boundaries_epochs"]}
        main = optax.piecewise_constant_schedule(base, boundaries)
    elif kind == "every":
        main = optax.exponential_decay(base, int(round(schedule["every_epochs"] * steps_per_epoch)),
                                       float(schedule["factor"]), staircase=True)
    else:
        raise ConfigError(f"Unknown schedule.kind {kind!r}; valid choices are {', '.join(map(repr, SCHEDULES))}.")
    warmup = int(round(float(schedule["warmup_epochs"]) * steps_per_epoch))
    if warmup <= 0:
        return main
    ramp = optax.linear_schedule(0.0, base, warmup)
    return optax.join_schedules([ramp, lambda step: main(step + warmup)], [warmup])


def parameter_groups(params: Any, classifier: str) -> Any:
    """'backbone' for backbone parameters except its classifier, 'head' for everything else."""
    flat = flax.traverse_util.flatten_dict(params)
    labels = {path: "backbone" if path[0] == "backbone" and path[1] != classifier else "head"
              for path in flat}
    return flax.traverse_util.unflatten_dict(labels)


def create_optimizer(config: Mapping[str, Any], steps_per_epoch: int,
                     classifier: str) -> optax.GradientTransformation:
    """SGD with weight decay and (Nesterov) momentum; heads at `head_lr_multiplier` x lr."""
    opt = config["optimizer"]
    return optax.chain(
        optax.add_decayed_weights(float(opt["weight_decay"])),
        optax.trace(decay=float(opt["momentum"]), nesterov=bool(opt["nesterov"])),
        optax.scale_by_learning_rate(learning_rate_schedule(config, steps_per_epoch)),
        optax.multi_transform(
            {"backbone": optax.identity(), "head": optax.scale(float(opt["head_lr_multiplier"]))},
            lambda params: parameter_groups(params, classifier)),
    )
