"""Layers shared by the backbones and the attention modules.

BatchNorm follows PyTorch's defaults (epsilon 1e-5, momentum 0.1, i.e. Flax momentum 0.9) so
that weights converted from torchvision or the authors' released code compute the same thing.
Convolutions use torchvision's Kaiming-normal (fan_out) initialisation.
"""

from typing import Any

import flax.linen as nn
import jax

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, dtype: Any, name: str | None = None, **kwargs: Any) -> nn.BatchNorm:
    """BatchNorm with PyTorch's epsilon and momentum, batch statistics when training."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        name=name,
        **kwargs,
    )


def conv(features: int, kernel: int, stride: int = 1, padding: int | str = 0, *, use_bias: bool = False,
         dtype: Any, name: str | None = None) -> nn.Conv:
    """A square convolution with PyTorch-style explicit symmetric padding (or 'SAME'/'VALID')."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   use_bias=use_bias, kernel_init=conv_init, dtype=dtype, name=name)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max pooling with PyTorch-style symmetric padding (padded cells never win)."""
    return nn.max_pool(x, (window, window), strides=(stride, stride),
                       padding=((padding, padding), (padding, padding)))

