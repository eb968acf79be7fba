"""A backbone added from one file: a two-convolution CNN, registered as 'toy_cnn'."""

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models import Backbone, BackboneOutput, register_backbone
from wrna_jax.models.layers import batch_norm, conv, dense


class ToyCNN(Backbone):
    features: int = 8

    @property
    def attach_points(self) -> dict[str, tuple[str, ...]]:
        return {"deepest": ("conv2", "conv1")}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
        maps = {}
        for i in (1, 2):
            x = nn.relu(batch_norm(train, self.dtype, f"bn{i}")(conv(self.features, 3, 1, 1, dtype=self.dtype,
                                                                    name=f"conv{i}")(x)))
            maps[f"conv{i}"] = x
        pooled = jnp.mean(x, axis=(1, 2))
        return BackboneOutput(features=maps, pooled=pooled,
                              logits=dense(self.num_classes, self.features, dtype=self.dtype, name="fc")(pooled))


@register_backbone("toy_cnn")
def build(model: Mapping[str, Any], dtype: Any, bn_group_size: int | None) -> ToyCNN:
    return ToyCNN(num_classes=model["num_classes"], dtype=dtype, bn_group_size=bn_group_size)
