"""Pre-activation Wide ResNet WRN-d-k for CIFAR (Zagoruyko & Komodakis, 2016).

Three groups of (d-4)/6 blocks with widths 16k, 32k, 64k. Attention attaches to group3 (the
final BN-ReLU output the classifier reads), then group2 and group1 (the groups' raw outputs).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.layers import batch_norm, conv
from wrna_jax.models.outputs import BackboneOutput


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with a 1x1 projection when the shape changes."""

    features: int
    stride: int = 1
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pre = nn.relu(batch_norm(train, self.dtype, name="bn1")(x))
        y = conv(self.features, 3, self.stride, 1, dtype=self.dtype, name="conv1")(pre)
        y = nn.relu(batch_norm(train, self.dtype, name="bn2")(y))
        if self.dropout > 0:
            y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = conv(self.features, 3, 1, 1, dtype=self.dtype, name="conv2")(y)
        if x.shape[-1] != self.features or self.stride != 1:
            x = conv(self.features, 1, self.stride, dtype=self.dtype, name="shortcut")(pre)
        return x + y


class CifarWRN(nn.Module):
    """WRN-depth-width; depth must be 6n+4."""

    num_classes: int
    depth: int = 28
    width: int = 10
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @property
    def classifier(self) -> str:
        """Name of the backbone's own classifier layer (it trains at the head learning rate)."""
        return "fc"

    @property
    def attach_points(self) -> tuple[str, ...]:
        return ("group3", "group2", "group1")

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
        blocks = (self.depth - 4) // 6
        x = conv(16, 3, 1, 1, dtype=self.dtype, name="conv1")(x.astype(self.dtype))
        features = {}
        for group in range(3):
            for block in range(blocks):
                x = PreActBlock(
                    features=16 * self.width * 2**group,
                    stride=2 if group > 0 and block == 0 else 1,
                    dropout=self.dropout,
                    dtype=self.dtype,
                    name=f"group{group + 1}_{block}",
                )(x, train)
            features[f"group{group + 1}"] = x
        x = nn.relu(batch_norm(train, self.dtype, name="bn")(x))
        features["group3"] = x
        pooled = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(pooled)
        return BackboneOutput(features=features, pooled=pooled, logits=logits)
