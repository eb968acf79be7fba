"""ImageNet bottleneck ResNets with a width factor, in torchvision's layout.

`ResNet(stage_sizes=(3, 4, 6, 3), width=2)` is torchvision's `wide_resnet50_2` and `width=1` its
`resnet50`. Submodule names mirror the PyTorch state-dict keys (`layer3_2/conv1` for
`layer3.2.conv1`) so that weights convert one to one; padding is explicit and symmetric as in
PyTorch (Flax's 'SAME' pads stride-2 convolutions asymmetrically). Convolutions start as
torchvision's (kaiming normal over fan_out); the classifier, always new when fine-tuning, as the
authors' `finetune` makes it (kaiming normal weight, PyTorch's default bias).
"""

import dataclasses
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wrna_jax.errors import BadFileError, ConfigError
from wrna_jax.models.layers import batch_norm, conv, dense, kaiming_normal_fan_out, max_pool
from wrna_jax.models.outputs import BackboneOutput
from wrna_jax.models.registry import Backbone, PretrainedWeights, register_backbone
from wrna_jax.models import state_dicts as mapping

STAGE_SIZES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
TORCHVISION_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), plus a projection shortcut."""

    planes: int
    width: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32
    bn_group_size: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        inner = self.planes * self.width
        out_features = self.planes * 4
        layer = lambda features, kernel, stride, padding, name: conv(
            features, kernel, stride, padding, kernel_init=kaiming_normal_fan_out, dtype=self.dtype, name=name)
        norm = lambda name: batch_norm(train, self.dtype, name, group_size=self.bn_group_size)
        y = layer(inner, 1, 1, 0, "conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = layer(inner, 3, self.stride, 1, "conv2")(y)
        y = nn.relu(norm("bn2")(y))
        y = layer(out_features, 1, 1, 0, "conv3")(y)
        y = norm("bn3")(y)
        if self.downsample:
            x = layer(out_features, 1, self.stride, 0, "downsample_conv")(x)
            x = norm("downsample_bn")(x)
        return nn.relu(x + y)


class ResNet(Backbone):
    """Bottleneck ResNet. Attach points: the outputs of layer4, layer3, layer2, layer1 (paper and
    master branch), or layer3, layer2, layer1 (dev branch: layer4 is never attended)."""

    stage_sizes: tuple[int, ...] = STAGE_SIZES[50]
    width: int = 2

    @property
    def attach_points(self) -> dict[str, tuple[str, ...]]:
        deepest = tuple(f"layer{i}" for i in range(len(self.stage_sizes), 0, -1))
        return {"deepest": deepest, "rectify": deepest[1:]}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
        x = conv(64, 7, 2, 3, kernel_init=kaiming_normal_fan_out, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
        x = nn.relu(batch_norm(train, self.dtype, "bn1", group_size=self.bn_group_size)(x))
        x = max_pool(x, 3, 2, 1)
        features = {}
        for stage, num_blocks in enumerate(self.stage_sizes):
            planes = 64 * 2**stage
            for block in range(num_blocks):
                x = Bottleneck(
                    planes=planes,
                    width=self.width,
                    stride=2 if stage > 0 and block == 0 else 1,
                    downsample=block == 0,
                    dtype=self.dtype,
                    bn_group_size=self.bn_group_size,
                    name=f"layer{stage + 1}_{block}",
                )(x, train)
            features[f"layer{stage + 1}"] = x
        pooled = jnp.mean(x, axis=(1, 2))
        logits = dense(self.num_classes, pooled.shape[-1], dtype=self.dtype, name="fc")(pooled)
        return BackboneOutput(features=features, pooled=pooled, logits=logits)


# PyTorch weights: torchvision / timm names (`layer1.0`, `downsample.0`, `fc`) or the authors'
# WRN-50-2 (`group0.layer.0`, `shortcut_conv`, `linear`) --------------------------------------

def torch_module_key(path: Sequence[str], naming: str = "torchvision") -> str:
    """PyTorch module name of a ResNet submodule path such as ('layer3_2', 'conv1')."""
    parts = []
    for name in path:
        block = re.fullmatch(r"layer(\d+)_(\d+)", name)
        if block and naming == "torchvision":
            name = f"layer{block[1]}.{block[2]}"
        elif block:
            name = f"group{int(block[1]) - 1}.layer.{block[2]}"
        elif name in ("downsample_conv", "downsample_bn"):
            name = ({"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}[name]
                    if naming == "torchvision" else name.replace("downsample", "shortcut"))
        elif name == "fc" and naming == "released":
            name = "linear"
        parts.append(name)
    return ".".join(parts)


def torch_rules(template: Mapping[mapping.Path, tuple[int, ...]], naming: str = "torchvision",
                prefix: mapping.Path = ()) -> list[mapping.Rule]:
    """Conversion rules for every variable of a `ResNet` under `prefix` (e.g. ('backbone',))."""
    rules = []
    for target, shape in template.items():
        module_path = target[1:-1]
        if tuple(module_path[:len(prefix)]) != tuple(prefix):
            continue
        rules.append(mapping.leaf_rule(target, shape, torch_module_key(module_path[len(prefix):], naming)))
    return rules


@dataclasses.dataclass(frozen=True)
class TorchLayout:
    """What a ResNet state dict's keys and shapes say about the network."""

    stage_sizes: tuple[int, ...]
    width: int
    num_classes: int

    @property
    def depth(self) -> int:
        depths = {v: k for k, v in STAGE_SIZES.items()}
        if self.stage_sizes not in depths:
            raise BadFileError(f"ResNet stage sizes {self.stage_sizes} are not ResNet-50/101/152.")
        return depths[self.stage_sizes]


def torch_layout(state_dict: Mapping[str, np.ndarray], naming: str = "torchvision") -> TorchLayout:
    """Stage sizes, width factor and classes of a bottleneck ResNet state dict."""
    if naming == "torchvision":
        pattern, first, classifier = r"layer(\d+)\.(\d+)\.", "layer1.0.conv1.weight", "fc.weight"
        stage_base = 1
    else:
        pattern, first, classifier = r"group(\d+)\.layer\.(\d+)\.", "group0.layer.0.conv1.weight", "linear.weight"
        stage_base = 0
    if first not in state_dict:
        raise BadFileError(f"This does not look like a {naming} ResNet state dict: there is no {first!r} "
                           f"(its first keys: {', '.join(list(state_dict)[:5])}).")
    if f"{first.rsplit('.', 2)[0]}.conv3.weight" not in state_dict:
        raise BadFileError("Only bottleneck ResNets (resnet50/101/152, wide_resnet50_2/101_2) are "
                           "supported; this state dict has basic blocks (resnet18/34).")
    blocks: dict[int, int] = {}
    for key in state_dict:
        match = re.match(pattern, key)
        if match:
            stage, block = int(match[1]) - stage_base, int(match[2])
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    stage_sizes = tuple(blocks[s] for s in sorted(blocks))
    if sorted(blocks) != list(range(len(blocks))):
        raise BadFileError(f"The state dict has ResNet stages {sorted(blocks)}: some are missing.")
    inner = state_dict[first].shape[0]
    if inner % 64:
        raise BadFileError(f"{first} has {inner} output channels, not a multiple of 64.")
    if classifier not in state_dict:
        raise BadFileError(f"The state dict has no classifier {classifier!r}; it may be truncated.")
    return TorchLayout(stage_sizes, inner // 64, int(state_dict[classifier].shape[0]))


def _convert_torchvision(state_dict: Mapping[str, np.ndarray], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    layout = torch_layout(state_dict)
    description = dict(stage_sizes=list(layout.stage_sizes), width=layout.width, num_classes=layout.num_classes)
    template = mapping.abstract_variables(_module(description), (224, 224, 3))
    variables = mapping.convert(
        state_dict, torch_rules(template), template, what=what,
        hint="Expected a torchvision/timm bottleneck ResNet state dict (e.g. wide_resnet50_2); "
             "the authors' painless-attention checkpoints load with wrna_jax.weights.load_released.")
    return description, variables


def _module(description: Mapping[str, Any]) -> ResNet:
    return ResNet(num_classes=int(description["num_classes"]), stage_sizes=tuple(description["stage_sizes"]),
                  width=int(description["width"]))


def _mismatch(description: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    if STAGE_SIZES.get(model["depth"]) == tuple(description["stage_sizes"]) and model["width"] == description["width"]:
        return ""
    names = {v: k for k, v in STAGE_SIZES.items()}
    held = names.get(tuple(description["stage_sizes"]), description["stage_sizes"])
    return (f"it holds a ResNet-{held} of width {description['width']}, but the config builds "
            f"model.depth={model['depth']}, model.width={model['width']}")


TORCHVISION_WEIGHTS = PretrainedWeights(
    convert=_convert_torchvision, module=_module, mismatch=_mismatch, input_shape=(224, 224, 3),
    instructions=(f"Download torchvision's ImageNet WRN-50-2 ({TORCHVISION_URL}) and convert it once:\n"
                  f"  wget {TORCHVISION_URL}\n"
                  "  python -m wrna_jax.convert wide_resnet50_2-95faca4d.pth DST\n"
                  "(reading .pth needs torch; a timm wide_resnet50_2 model.safetensors converts without it)."))


@register_backbone("imagenet_resnet", pretrained=TORCHVISION_WEIGHTS)
def build(model: Mapping[str, Any], dtype: Any, bn_group_size: int | None) -> ResNet:
    """`model.depth` 50/101/152 and `model.width` (2: wide_resnet50_2; 1: resnet50)."""
    depth = model["depth"]
    if depth not in STAGE_SIZES:
        raise ConfigError(f"Unknown model.depth for imagenet_resnet {depth!r}; valid choices are "
                          f"{', '.join(map(repr, STAGE_SIZES))}.")
    return ResNet(num_classes=int(model["num_classes"]), stage_sizes=STAGE_SIZES[depth], width=int(model["width"]),
                  dtype=dtype, bn_group_size=bn_group_size)
