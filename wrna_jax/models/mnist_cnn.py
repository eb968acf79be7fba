"""The cluttered-MNIST CNN of the paper (section 4.1) as in the authors' released code.

BN(input); conv5x5 32 (valid) -> maxpool 2 -> ReLU -> BN; conv3x3 64 (valid) -> maxpool 2 ->
ReLU -> BN; conv3x3 128 (valid), conv3x3 128 (same), conv3x3 128 (valid), each -> ReLU -> BN;
dense 256 -> ReLU -> BN; dense 10. For 40x40 inputs the maps are 18, 8, 6, 6 and 4 pixels wide.
Names follow the released state dict (`bn1..bn7`, `conv1..conv5`, `fc1`, `fc2`). As in the
authors' code the convolutions have no bias (`conv_bias=True` only imports checkpoints of older
code that had them) and every weight starts as kaiming normal over fan_in, biases as PyTorch's.
With `stn=True` a spatial transformer (wrna_jax/models/stn.py) resamples the input first: the
paper's STN baseline (Figure 4e).
"""

from typing import Any, Mapping

import flax.linen as nn
import jax

from wrna_jax.models.layers import batch_norm, conv, dense, max_pool
from wrna_jax.models.outputs import BackboneOutput
from wrna_jax.models.registry import Backbone, register_backbone
from wrna_jax.models.stn import SpatialTransformer

# (features, kernel, padding, max-pool after the conv)
CONV_LAYERS = ((32, 5, 0, True), (64, 3, 0, True), (128, 3, 0, False), (128, 3, 1, False),
               (128, 3, 0, False))


class MnistCNN(Backbone):
    """Attention attaches after conv5, conv4, conv3, conv2, conv1 as AD goes 1..5 (every scheme)."""

    hidden: int = 256
    stn: bool = False
    conv_bias: bool = False

    classifier = "fc2"

    @property
    def attach_points(self) -> dict[str, tuple[str, ...]]:
        return {"deepest": tuple(f"conv{i}" for i in range(len(CONV_LAYERS), 0, -1))}

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> BackboneOutput:
        norm = lambda name: batch_norm(train, self.dtype, name, group_size=self.bn_group_size)
        if self.stn:
            x = SpatialTransformer(dtype=self.dtype, name="stn")(x)
        x = norm("bn1")(x.astype(self.dtype))
        features = {}
        for i, (width, kernel, padding, pool) in enumerate(CONV_LAYERS, start=1):
            x = conv(width, kernel, 1, padding, use_bias=self.conv_bias, dtype=self.dtype, name=f"conv{i}")(x)
            if pool:
                x = max_pool(x, 2, 2)
            x = norm(f"bn{i + 1}")(nn.relu(x))
            features[f"conv{i}"] = x
        x = x.reshape(x.shape[0], -1)
        x = dense(self.hidden, x.shape[-1], dtype=self.dtype, name="fc1")(x)
        pooled = norm(f"bn{len(CONV_LAYERS) + 2}")(nn.relu(x))
        logits = dense(self.num_classes, self.hidden, dtype=self.dtype, name="fc2")(pooled)
        return BackboneOutput(features=features, pooled=pooled, logits=logits)


@register_backbone("mnist_cnn", stn=True)
def build(model: Mapping[str, Any], dtype: Any, bn_group_size: int | None) -> MnistCNN:
    """The cluttered-MNIST CNN; `model.stn`: a spatial transformer in front, `model.conv_bias`."""
    return MnistCNN(num_classes=int(model["num_classes"]), dtype=dtype, stn=bool(model["stn"]),
                    conv_bias=bool(model["conv_bias"]), bn_group_size=bn_group_size)
