"""ImageNet bottleneck ResNets with a width factor, in torchvision's layout.

`ResNet(stage_sizes=(3, 4, 6, 3), width=2)` is torchvision's `wide_resnet50_2` and `width=1` its
`resnet50`. Submodule names mirror the PyTorch state-dict keys (`layer3_2/conv1` for
`layer3.2.conv1`) so that weights convert one to one; padding is explicit and symmetric as in
PyTorch (Flax's 'SAME' pads stride-2 convolutions asymmetrically).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.layers import batch_norm, conv, max_pool
from wrna_jax.models.outputs import BackboneOutput

STAGE_SIZES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), plus a projection shortcut."""

    planes: int
    width: int
    stride: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        inner = self.planes * self.width
        out_features = self.planes * 4
        y = conv(inner, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
        y = conv(inner, 3, self.stride, 1, dtype=self.dtype, name="conv2")(y)
        y = nn.relu(batch_norm(train, self.dtype, name="bn2")(y))
        y = conv(out_features, 1, dtype=self.dtype, name="conv3")(y)
        y = batch_norm(train, self.dtype, name="bn3")(y)
        if self.downsample:
            x = conv(out_features, 1, self.stride, dtype=self.dtype, name="downsample_conv")(x)
            x = batch_norm(train, self.dtype, name="downsample_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """Bottleneck ResNet; attention attaches to the outputs of layer4, layer3, layer2, layer1."""

    num_classes: int
    stage_sizes: tuple[int, ...] = STAGE_SIZES[50]
    width: int = 2
    dtype: Any = jnp.float32

    @property
    def classifier(self) -> str:
        """Name of the backbone's own classifier layer (it trains at the head learning rate)."""
        return "fc"

    @property
    def attach_points(self) -> tuple[str, ...]:
        return tuple(f"layer{i}" for i in range(len(self.stage_sizes), 0, -1))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
        x = conv(64, 7, 2, 3, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
        x = nn.relu(batch_norm(train, self.dtype, name="bn1")(x))
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
                    name=f"layer{stage + 1}_{block}",
                )(x, train)
            features[f"layer{stage + 1}"] = x
        pooled = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(pooled)
        return BackboneOutput(features=features, pooled=pooled, logits=logits)
