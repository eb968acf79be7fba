"""The convolution every layer here runs (`layers.conv` hands it to flax's `nn.Conv`): XLA's
`lax.conv_general_dilated`, except where XLA:CPU is measured to be slow.

A stride-1 convolution with few input channels (the cluttered-MNIST CNN's conv1 reads the
one-channel image) computes its input gradient on the CPU as one matrix product, the output
gradient times the transposed kernel, followed by col2im (the sum of the kernel's shifted
taps): 2.9 ms instead of XLA:CPU's 12.8 ms for conv1 at batch 128 (benchmarks/cpu_lowerings.py).
Its forward pass and filter gradient stay XLA's. On other backends (GPU: cuDNN) every
convolution is XLA's. Same values as `lax.conv_general_dilated` up to float32 summation order
(tests/test_models.py).
"""

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

# Stride-1 convolutions reading at most this many channels take the col2im input gradient.
SMALL_INPUT_CHANNELS = 4
_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(dimension_numbers: Any) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, jax.lax.ConvDimensionNumbers):
        return dimension_numbers == jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
    return tuple(dimension_numbers) == _NHWC


def _unit(values: Sequence[int] | None) -> bool:
    return values is None or all(v == 1 for v in values)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jax.Array:
    """`lax.conv_general_dilated`'s signature and values; see the module docstring for where the
    CPU lowering differs."""
    plain = functools.partial(jax.lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                              lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                              dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                              batch_group_count=batch_group_count, precision=precision,
                              preferred_element_type=preferred_element_type)
    small_input = (lhs.ndim == 4 and _is_nhwc(dimension_numbers) and not isinstance(padding, str)
                   and _unit(window_strides) and _unit(lhs_dilation) and _unit(rhs_dilation)
                   and feature_group_count == 1 and batch_group_count == 1
                   and rhs.shape[2] <= SMALL_INPUT_CHANNELS
                   and all(int(p) >= 0 for pair in padding for p in pair))
    if not small_input:
        return plain(lhs, rhs)
    pads = tuple(tuple(int(p) for p in pair) for pair in padding)
    col2im = lambda x, w: _col2im_conv(x, w, pads, precision, preferred_element_type)
    return jax.lax.platform_dependent(lhs, rhs, cpu=col2im, default=plain)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _col2im_conv(x: jax.Array, w: jax.Array, padding: tuple, precision: Any, preferred_element_type: Any) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC, precision=precision,
                                        preferred_element_type=preferred_element_type)


def _col2im_forward(x, w, padding, precision, preferred_element_type):
    return _col2im_conv(x, w, padding, precision, preferred_element_type), (x, w)


def _col2im_backward(padding, precision, preferred_element_type, residuals, g):
    x, w = residuals
    (top, bottom), (left, right) = padding
    kh, kw = w.shape[:2]
    _, h, wo, _ = g.shape
    height, width = x.shape[1] + top + bottom, x.shape[2] + left + right
    # Each output position's gradient spread over the kh x kw taps it read, then summed in place.
    taps = jnp.einsum("bhwo,ijco->bhwijc", g, w, precision=precision, preferred_element_type=jnp.float32)
    dx = sum(jnp.pad(taps[:, :, :, i, j], ((0, 0), (i, height - h - i), (j, width - wo - j), (0, 0)))
             for i in range(kh) for j in range(kw))
    dx = dx[:, top:height - bottom, left:width - right].astype(x.dtype)
    _, filter_vjp = jax.vjp(lambda w: _col2im_conv.fun(x, w, padding, precision, preferred_element_type), w)
    return dx, filter_vjp(g)[0]


_col2im_conv.defvjp(_col2im_forward, _col2im_backward)
