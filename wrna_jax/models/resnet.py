"""ImageNet bottleneck ResNets with a width factor, in torchvision's layout.

`ResNet(stage_sizes=(3, 4, 6, 3), width=2)` is torchvision's `wide_resnet50_2` and `width=1` its
`resnet50`. Submodule names mirror the PyTorch state-dict keys (`layer3_2/conv1` for
`layer3.2.conv1`) so that weights convert one to one; padding is explicit and symmetric as in
PyTorch (Flax's 'SAME' pads stride-2 convolutions asymmetrically). Convolutions start as
torchvision's (kaiming normal over fan_out); the classifier, always new when fine-tuning, as the
authors' `finetune` makes it (kaiming normal weight, PyTorch's default bias).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.layers import batch_norm, conv, dense, kaiming_normal_fan_out, max_pool
from wrna_jax.models.outputs import BackboneOutput

STAGE_SIZES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


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


class ResNet(nn.Module):
    """Bottleneck ResNet. Attach points: the outputs of layer4, layer3, layer2, layer1 (paper and
    master branch), or layer3, layer2, layer1 (dev branch: layer4 is never attended)."""

    num_classes: int
    stage_sizes: tuple[int, ...] = STAGE_SIZES[50]
    width: int = 2
    dtype: Any = jnp.float32
    bn_group_size: int | None = None

    @property
    def classifier(self) -> str:
        """Name of the backbone's own classifier layer (it trains at the head learning rate)."""
        return "fc"

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
