"""Layers shared by the backbones and the attention modules.

BatchNorm follows PyTorch's defaults (epsilon 1e-5, momentum 0.1, i.e. Flax momentum 0.9) so
that weights converted from torchvision or the authors' released code compute the same thing.
Convolutions use torchvision's Kaiming-normal (fan_out) initialisation.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

# Convolutions with at most this many outputs (attention masks) run as patches x kernel.
NARROW_CONV_FEATURES = 8

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


def _pointwise_or_general_conv(lhs: jax.Array, rhs: jax.Array, window_strides, padding,
                               lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                               feature_group_count: int = 1, precision=None,
                               preferred_element_type=None) -> jax.Array:
    """`lax.conv_general_dilated`, but an unpadded stride-1 1x1 convolution is a plain matmul.

    Same result and parameters; the matmul's gradient is several times faster than XLA:CPU's
    convolution backward pass, and no slower on GPU.
    """
    pointwise = (rhs.shape[:2] == (1, 1) and tuple(window_strides) == (1, 1)
                 and feature_group_count == 1 and not lhs_dilation
                 and all(tuple(p) == (0, 0) for p in padding))
    if pointwise:
        return jnp.einsum("bhwc,co->bhwo", lhs, rhs[0, 0], precision=precision,
                          preferred_element_type=preferred_element_type)
    if rhs.shape[-1] <= NARROW_CONV_FEATURES and tuple(window_strides) == (1, 1) \
            and feature_group_count == 1 and not lhs_dilation and not rhs_dilation:
        kh, kw = rhs.shape[:2]
        lhs = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
        h, w = lhs.shape[1] - kh + 1, lhs.shape[2] - kw + 1
        patches = jnp.stack([lhs[:, i:i + h, j:j + w] for i in range(kh) for j in range(kw)], axis=3)
        return jnp.einsum("bhwpc,pco->bhwo", patches, rhs.reshape(kh * kw, *rhs.shape[2:]),
                          precision=precision, preferred_element_type=preferred_element_type)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision,
                                        preferred_element_type=preferred_element_type)


def conv(features: int, kernel: int, stride: int = 1, padding: int | str = 0, *, use_bias: bool = False,
         dtype: Any, name: str | None = None) -> nn.Conv:
    """A square convolution with PyTorch-style explicit symmetric padding (or 'SAME'/'VALID')."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   use_bias=use_bias, kernel_init=conv_init, dtype=dtype, name=name,
                   conv_general_dilated=_pointwise_or_general_conv)


def max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max pooling with PyTorch-style symmetric padding (padded cells never win).

    Non-overlapping unpadded windows (MNIST CNN) are a reshape and a max, as PyTorch's floor
    mode: its gradient is ~8x faster on XLA:CPU than reduce_window's select-and-scatter.
    """
    if window == stride and padding == 0:
        b, h, w, c = x.shape
        h, w = h // window * window, w // window * window
        x = x[:, :h, :w].reshape(b, h // window, window, w // window, window, c)
        return jnp.max(x, axis=(2, 4))
    return nn.max_pool(x, (window, window), strides=(stride, stride),
                       padding=((padding, padding), (padding, padding)))

