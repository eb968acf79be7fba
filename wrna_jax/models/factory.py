"""`create_model(config)`: the one place a config becomes a Flax module, after validation.

Config fields read (ml_collections.ConfigDict):
  model.backbone     'imagenet_resnet' | 'cifar_wrn' | 'mnist_cnn'
  model.depth, model.width   ResNet depth (50/101/152) and width factor, or WRN-d-k's d and k
  model.dropout      CIFAR WRN dropout;  model.num_classes;  model.dtype 'float32' | 'bfloat16'
  model.stn          mnist_cnn only: a spatial transformer in front (the paper's STN baseline)
  attention.preset   'paper' | 'released' (defaults for the fields left as None below)
  attention.depth (AD, 0 = plain backbone), attention.width (AW), attention.gates
  attention.mask_fn, reduction, mask_kernel, channel_reduction, attended_bn,
  shared_projection, gate_bn, regularizer_norm   (None = the preset's value)
"""

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from wrna_jax.models.attention import MASK_FUNCTIONS, REDUCTIONS, REGULARIZER_NORMS, AttentionSpec
from wrna_jax.models.cifar_wrn import CifarWRN
from wrna_jax.models.mnist_cnn import MnistCNN
from wrna_jax.models.network import AttentionNetwork
from wrna_jax.models.resnet import STAGE_SIZES, ResNet

# What each preset sets when the config leaves a field as None (SPEC section 1).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(mask_fn="softmax", reduction="avg", mask_kernel=1, channel_reduction=False,
                  attended_bn=False, shared_projection=True, gate_bn=False,
                  regularizer_norm="paper", regularizer_weight=0.1),
    "released": dict(mask_fn="softmax", reduction="project", mask_kernel=3,
                     channel_reduction=True, attended_bn=True, shared_projection=False,
                     gate_bn=True, regularizer_norm="released", regularizer_weight=1e-3),
}
BACKBONES = ("imagenet_resnet", "cifar_wrn", "mnist_cnn")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_CHOICES = {"mask_fn": MASK_FUNCTIONS, "reduction": REDUCTIONS, "mask_kernel": (1, 3),
            "regularizer_norm": REGULARIZER_NORMS}


def _choose(kind: str, value: Any, valid: tuple) -> Any:
    if value not in valid:
        raise ValueError(f"Unknown {kind} {value!r}; valid choices are {', '.join(map(repr, valid))}.")
    return value


def create_backbone(model_config: Mapping[str, Any]) -> nn.Module:
    """The backbone module named by `model_config.backbone`, validated."""
    name = _choose("model.backbone", model_config["backbone"], BACKBONES)
    dtype = DTYPES[_choose("model.dtype", model_config.get("dtype", "float32"), tuple(DTYPES))]
    num_classes = int(model_config["num_classes"])
    if num_classes < 2:
        raise ValueError(f"model.num_classes must be at least 2, got {num_classes}.")
    stn = model_config.get("stn") or False
    if not isinstance(stn, bool):
        raise ValueError(f"model.stn={stn!r}: use True or False.")
    if stn and name != "mnist_cnn":
        raise ValueError(f"model.stn=True is only implemented for the 'mnist_cnn' backbone, not {name!r}.")
    if name == "imagenet_resnet":
        depth = _choose("model.depth for imagenet_resnet", model_config.get("depth", 50),
                        tuple(STAGE_SIZES))
        return ResNet(num_classes, STAGE_SIZES[depth], int(model_config.get("width", 2)), dtype)
    if name == "cifar_wrn":
        depth = int(model_config.get("depth", 28))
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"model.depth={depth} is not a valid WRN depth: use 6n+4 with n >= 1 "
                             "(10, 16, 22, 28, 34, 40, ...).")
        return CifarWRN(num_classes, depth, int(model_config.get("width", 10)),
                        float(model_config.get("dropout", 0.0)), dtype)
    return MnistCNN(num_classes, dtype=dtype, stn=stn)


def attention_spec(attention_config: Mapping[str, Any], attach_points: tuple[str, ...]) -> AttentionSpec:
    """Resolve the preset and the explicit overrides into an `AttentionSpec`, validated."""
    preset = _choose("attention.preset", attention_config.get("preset", "released"), tuple(PRESETS))
    depth, width = int(attention_config.get("depth", 0)), int(attention_config.get("width", 1))
    if not 0 <= depth <= len(attach_points):
        raise ValueError(f"attention.depth (AD) = {depth}, but this backbone has "
                         f"{len(attach_points)} attach points {attach_points}: use 0..{len(attach_points)}.")
    if width < 1:
        raise ValueError(f"attention.width (AW) = {width}: it must be at least 1.")
    fields = dict(PRESETS[preset])
    for key in fields:
        if attention_config.get(key) is not None:
            fields[key] = attention_config[key]
    for key, valid in _CHOICES.items():
        _choose(f"attention.{key}", fields[key], valid)
    return AttentionSpec(depth=depth, width=width, gates=bool(attention_config.get("gates", True)),
                         **fields)


def create_model(config: Mapping[str, Any]) -> AttentionNetwork:
    """The full model for `config` (reads `config.model` and `config.attention`).

    Raises ValueError naming the valid choices for any unknown or out-of-range setting, so
    a bad config fails here, before anything is compiled.
    """
    backbone = create_backbone(config["model"])
    spec = attention_spec(config["attention"], backbone.attach_points)
    return AttentionNetwork(backbone=backbone, spec=spec, num_classes=backbone.num_classes,
                            dtype=backbone.dtype)
