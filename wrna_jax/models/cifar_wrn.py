"""Pre-activation Wide ResNet WRN-d-k for CIFAR (Zagoruyko & Komodakis, 2016).

Three groups of (d-4)/6 blocks with widths 16k, 32k, 64k, then BN-ReLU and global average
pooling. Three layouts:

* 'zagoruyko': the original WRN (a 1x1 projection shortcut reads the block's pre-activated
  input; elementwise dropout between the convolutions); also the authors' CIFAR baselines.
* 'authors': the authors' attention WRN at the dev branch's tip (288ec61,
  `wide_resnet_cifar_painless.py`): a BN-ReLU after the stem convolution, projection shortcuts
  reading the block's raw input, and channel dropout (whole feature maps, PyTorch's dropout2d).
* 'authors_ea7d4af': their attention WRN as it was at commit ea7d4af: Zagoruyko's blocks and
  stem (no dropout), and every module before the final output reads its group's output through
  a BatchNorm-ReLU of its own (`own_bn_points`).

Convolutions start as kaiming normal over fan_in, the classifier as PyTorch's nn.Linear.
Attach points: the final BN-ReLU output (`group3`), then the raw outputs of group2 and group1
(paper, master branch, and the dev branch at ea7d4af), or the final output and the
pre-activated inputs of group3's and group2's first blocks, `group3_preact` and `group2_preact`
(dev branch at 288ec61).
"""

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.errors import ConfigError
from wrna_jax.models.layers import batch_norm, conv, dense, torch_default
from wrna_jax.models.outputs import BackboneOutput
from wrna_jax.models.registry import Backbone, register_backbone

LAYOUTS = ("zagoruyko", "authors", "authors_ea7d4af")


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with a 1x1 projection when the shape changes.
    Returns (output, the pre-activated input)."""

    features: int
    stride: int = 1
    dropout: float = 0.0
    layout: str = "zagoruyko"
    dtype: Any = jnp.float32
    bn_group_size: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        norm = lambda name: batch_norm(train, self.dtype, name, group_size=self.bn_group_size)
        pre = nn.relu(norm("bn1")(x))
        y = conv(self.features, 3, self.stride, 1, dtype=self.dtype, name="conv1")(pre)
        y = nn.relu(norm("bn2")(y))
        if self.dropout > 0:
            channels = (1, 2) if self.layout == "authors" else ()  # dropout2d: one draw per map
            y = nn.Dropout(self.dropout, broadcast_dims=channels, deterministic=not train)(y)
        y = conv(self.features, 3, 1, 1, dtype=self.dtype, name="conv2")(y)
        if x.shape[-1] != self.features or self.stride != 1:
            x = conv(self.features, 1, self.stride, dtype=self.dtype, name="shortcut")(
                x if self.layout == "authors" else pre)
        return x + y, pre


class CifarWRN(Backbone):
    """WRN-depth-width; depth must be 6n+4."""

    depth: int = 28
    width: int = 10
    dropout: float = 0.0
    layout: str = "zagoruyko"

    @property
    def attach_points(self) -> dict[str, tuple[str, ...]]:
        if self.layout == "authors_ea7d4af":
            return {"deepest": ("group3", "group2", "group1")}
        return {"deepest": ("group3", "group2", "group1"),
                "rectify": ("group3", "group3_preact", "group2_preact")}

    @property
    def own_bn_points(self) -> tuple[str, ...]:
        return ("group2", "group1") if self.layout == "authors_ea7d4af" else ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
        blocks = (self.depth - 4) // 6
        x = conv(16, 3, 1, 1, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
        if self.layout == "authors":
            x = nn.relu(batch_norm(train, self.dtype, "stem_bn", group_size=self.bn_group_size)(x))
        features = {}
        for group in range(3):
            for block in range(blocks):
                x, pre = PreActBlock(
                    features=16 * self.width * 2**group,
                    stride=2 if group > 0 and block == 0 else 1,
                    dropout=self.dropout,
                    layout=self.layout,
                    dtype=self.dtype,
                    bn_group_size=self.bn_group_size,
                    name=f"group{group + 1}_{block}",
                )(x, train)
                if block == 0 and group > 0:
                    features[f"group{group + 1}_preact"] = pre
            features[f"group{group + 1}"] = x
        x = nn.relu(batch_norm(train, self.dtype, "bn", group_size=self.bn_group_size)(x))
        features["group3"] = x
        pooled = jnp.mean(x, axis=(1, 2))
        logits = dense(self.num_classes, pooled.shape[-1], kernel_init=torch_default, dtype=self.dtype,
                       name="fc")(pooled)
        return BackboneOutput(features=features, pooled=pooled, logits=logits)


@register_backbone("cifar_wrn")
def build(model: Mapping[str, Any], dtype: Any, bn_group_size: int | None) -> CifarWRN:
    """WRN-d-k: `model.depth` d (6n+4), `model.width` k, `model.dropout`, `model.layout`."""
    depth = int(model["depth"])
    if depth < 10 or (depth - 4) % 6:
        raise ConfigError(f"model.depth={depth} is not a valid WRN depth: use 6n+4 with n >= 1 "
                          "(10, 16, 22, 28, 34, 40, ...).")
    if model["layout"] not in LAYOUTS:
        raise ConfigError(f"Unknown model.layout {model['layout']!r}; valid choices are "
                          f"{', '.join(map(repr, LAYOUTS))}.")
    if not 0 <= model["dropout"] < 1:
        raise ConfigError(f"model.dropout={model['dropout']!r}: use a probability in [0, 1).")
    if model["dropout"] and model["layout"] == "authors_ea7d4af":
        raise ConfigError("model.layout='authors_ea7d4af' has no dropout (the authors added it later, "
                          "with the 'authors' layout): set model.dropout=0.0 or use layout='authors'.")
    return CifarWRN(num_classes=int(model["num_classes"]), depth=depth, width=int(model["width"]),
                    dropout=float(model["dropout"]), layout=model["layout"], dtype=dtype, bn_group_size=bn_group_size)
