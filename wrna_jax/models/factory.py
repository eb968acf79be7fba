"""`create_model(config)`: the one place a config becomes a Flax module, after validation.

Config fields read (ml_collections.ConfigDict; defaults in configs/default.py):
  model.backbone     a registered backbone (models/registry.py): 'imagenet_resnet', 'cifar_wrn',
                     'mnist_cnn', ...; its builder reads the fields it needs (depth, width, ...)
  model.num_classes;  model.dtype 'float32' | 'bfloat16';  model.bn_group_size (None: the batch)
  model.stn          a spatial transformer in front (backbones registered with stn=True)
  model.bn_scale_init  'ones' (None) | 'uniform': BatchNorm scales start U[0, 1) as PyTorch < 1.2
  attention.preset   'paper' | 'released' | 'attend_rectify' (docs/method.md)
  attention.depth (AD, 0 = plain backbone), attention.width (AW), attention.gates
  attention.mask_fn, reduction, mask_kernel, channel_reduction, attended_bn, shared_projection,
  gate_bn, gate_fn, output, regularizer_norm, regularizer_pool, regularizer_weight
                     (None = the preset's value)
"""

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from wrna_jax.errors import ConfigError
from wrna_jax.models.attention import (GATE_FUNCTIONS, MASK_FUNCTIONS, OUTPUTS, REDUCTIONS, REGULARIZER_NORMS,
                                       AttentionSpec)
from wrna_jax.models.layers import BN_SCALE_INITS
from wrna_jax.models.network import AttentionNetwork, attach_points
from wrna_jax.models.registry import backbone_entry

# Everything a preset fixes (docs/method.md). Fields with a config override take the preset's value
# when the config leaves them None; `module` and `attach` define the preset.
# None: the field does not exist for that module.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(module="painless", attach="deepest", mask_fn="softmax", mask_kernel=1, reduction="avg",
                  channel_reduction=False, attended_bn=False, shared_projection=True, gate_bn=False,
                  gate_fn="softmax", output="all", regularizer_norm="paper", regularizer_pool=1,
                  regularizer_weight=0.1),
    "released": dict(module="painless", attach="deepest", mask_fn="softmax", mask_kernel=3, reduction="project",
                     channel_reduction=True, attended_bn=True, shared_projection=False, gate_bn=True,
                     gate_fn="softmax", output="all", regularizer_norm="released", regularizer_pool=1,
                     regularizer_weight=1e-3),
    "attend_rectify": dict(module="rectify", attach="rectify", mask_fn="softmax", mask_kernel=3, reduction=None,
                           channel_reduction=None, attended_bn=None, shared_projection=None, gate_bn=True,
                           gate_fn="softmax", output="all", regularizer_norm="released", regularizer_pool=2,
                           regularizer_weight=1e-3),
}
OVERRIDABLE = ("mask_fn", "mask_kernel", "reduction", "channel_reduction", "attended_bn", "shared_projection",
               "gate_bn", "gate_fn", "output", "regularizer_norm", "regularizer_pool")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_CHOICES = {"mask_fn": MASK_FUNCTIONS, "reduction": REDUCTIONS, "mask_kernel": (1, 3),
            "regularizer_norm": REGULARIZER_NORMS, "gate_fn": GATE_FUNCTIONS, "output": OUTPUTS,
            "regularizer_pool": (1, 2)}


def _choose(kind: str, value: Any, valid: tuple) -> Any:
    if value not in valid:
        raise ConfigError(f"Unknown {kind} {value!r}; valid choices are {', '.join(map(repr, valid))}.")
    return value


def _bn_group_size(model_config: Mapping[str, Any]) -> int | None:
    size = model_config["bn_group_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 2):
        raise ConfigError(f"model.bn_group_size={size!r}: use None (statistics over the whole batch) or "
                          "a whole number >= 2 of examples per BatchNorm group.")
    return size


def create_backbone(model_config: Mapping[str, Any]) -> nn.Module:
    """The registered backbone named by `model_config.backbone` (with `num_classes` set),
    validated."""
    entry = backbone_entry(model_config["backbone"])
    _choose("model.dtype", model_config["dtype"], tuple(DTYPES))
    num_classes = model_config["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"model.num_classes must be a whole number of at least 2, got {num_classes!r}.")
    stn = model_config["stn"] or False
    if not isinstance(stn, bool):
        raise ConfigError(f"model.stn={stn!r}: use True or False.")
    if stn and not entry.stn:
        raise ConfigError(f"model.stn=True is not implemented for the {entry.name!r} backbone (only for "
                          "'mnist_cnn').")
    return entry.build(model_config, DTYPES[model_config["dtype"]], _bn_group_size(model_config))


def _preset(attention_config: Mapping[str, Any]) -> dict[str, Any]:
    return PRESETS[_choose("attention.preset", attention_config["preset"], tuple(PRESETS))]


def regularizer_weight(attention_config: Mapping[str, Any]) -> float:
    """The diversity regulariser's weight in the loss: the config's, or its preset's."""
    weight = attention_config["regularizer_weight"]
    weight = _preset(attention_config)["regularizer_weight"] if weight is None else weight
    if not weight >= 0:
        raise ConfigError(f"attention.regularizer_weight={weight!r}: use 0 (off) or a positive weight.")
    return float(weight)


def attention_spec(attention_config: Mapping[str, Any], backbone: nn.Module,
                   bn_group_size: int | None = None) -> AttentionSpec:
    """Resolve the preset and the explicit overrides into an `AttentionSpec`, validated."""
    preset = _preset(attention_config)
    depth, width = int(attention_config["depth"]), int(attention_config["width"])
    fields = {key: value for key, value in preset.items() if key != "regularizer_weight"}
    for key in OVERRIDABLE:
        value = attention_config[key]
        if value is None:
            continue
        if preset[key] is None:
            raise ConfigError(f"attention.{key}={value!r} does not apply to the {attention_config['preset']!r} "
                              f"preset ({preset['module']} modules have no such part): leave it None.")
        fields[key] = value
    for key, valid in _CHOICES.items():
        if fields[key] is not None:
            _choose(f"attention.{key}", fields[key], valid)
    if fields["output"] == "50" and fields["module"] != "rectify":
        raise ConfigError("attention.output='50' (the backbone averaged with the gated attention output) "
                          "exists for the 'attend_rectify' preset only; use 'all'.")
    spec = AttentionSpec(depth=depth, width=width, gates=bool(attention_config["gates"]),
                         bn_group_size=bn_group_size, **fields)
    points = attach_points(backbone, spec)
    if not 0 <= depth <= len(points):
        raise ConfigError(f"attention.depth (AD) = {depth}, but this backbone has "
                          f"{len(points)} attach points {points}: use 0..{len(points)}.")
    if width < 1:
        raise ConfigError(f"attention.width (AW) = {width}: it must be at least 1.")
    return spec


def num_classes(config: Mapping[str, Any]) -> int:
    """`config.model.num_classes`, or (None) the number of classes of `config.dataset`."""
    classes = config["model"]["num_classes"]
    if classes is None:
        from wrna_jax.data.registry import dataset_spec  # (TensorFlow-free)

        classes = dataset_spec(config["dataset"]).num_classes
    return classes


def create_model(config: Mapping[str, Any]) -> AttentionNetwork:
    """The full model for `config` (reads `config.model` and `config.attention`; the number of
    classes from `config.dataset` when `model.num_classes` is None).

    Raises ValueError naming the valid choices for any unknown or out-of-range setting, so
    a bad config fails here, before anything is compiled.
    """
    backbone = create_backbone({**dict(config["model"]), "num_classes": num_classes(config)})
    spec = attention_spec(config["attention"], backbone, backbone.bn_group_size)
    scale_init = _choose("model.bn_scale_init", config["model"]["bn_scale_init"] or "ones", BN_SCALE_INITS)
    return AttentionNetwork(backbone=backbone, spec=spec, num_classes=backbone.num_classes,
                            dtype=backbone.dtype, bn_scale_init=scale_init)
