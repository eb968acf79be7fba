"""Layers and initialisers shared by the backbones and the attention modules, with PyTorch's
semantics, so that the authors' recipes and converted PyTorch weights compute the same thing.

* `BatchNorm` (training statistics and gradient from `normalization.normalize`, faster on the
  CPU): PyTorch's epsilon (1e-5) and momentum (0.1, i.e. 0.9 here), running variance
  updated with the unbiased batch variance n/(n-1) as PyTorch does, and optional statistics over
  fixed-size groups of the batch (what `torch.nn.DataParallel` gives: each GPU normalises its
  own slice), independent of how many devices run the step. Flax's `nn.BatchNorm` updates the
  running variance with the biased variance and has no groups, hence this module.
* Initialisers named after PyTorch's: `kaiming_normal` (torch.nn.init.kaiming_normal_, fan_in,
  ReLU gain: std sqrt(2 / fan_in); the authors' choice for every conv and linear weight),
  `kaiming_normal_fan_out` (torchvision's ResNet convolutions), `torch_default` (what
  nn.Conv2d / nn.Linear start with: U(+-1/sqrt(fan_in))) and `torch_default_bias(fan_in)`.
  docs/method.md lists which layer uses which.
* `conv`: PyTorch-style explicit symmetric padding, computed by `convolution.conv_general_dilated`
  (XLA's convolution, with a faster input gradient on the CPU where XLA:CPU's is slow).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from wrna_jax.models import convolution, normalization

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
torch_default = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias initialisation of a layer with `fan_in` inputs: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class BatchNorm(nn.Module):
    """BatchNorm with PyTorch's semantics (see the module docstring).

    axis: the feature axis or axes (statistics are per feature, over all other axes).
    group_size: in training, normalise each group of `group_size` consecutive examples (axis 0)
      with its own statistics; the running statistics move by the mean of the groups' statistics.
      None: one group, the whole batch.
    """

    use_running_average: bool
    axis: int | Sequence[int] = -1
    momentum: float = BN_MOMENTUM
    epsilon: float = BN_EPSILON
    dtype: Any = None
    group_size: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        axes = tuple(a % x.ndim for a in (self.axis if isinstance(self.axis, Sequence) else (self.axis,)))
        if 0 in axes:
            raise ValueError("BatchNorm: axis 0 is the batch axis; it cannot be a feature axis.")
        features = tuple(x.shape[a] for a in axes)
        broadcast = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(features, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(features, jnp.float32))
        x32 = x.astype(jnp.float32)
        if self.use_running_average:
            mean, var = ra_mean.value.reshape(broadcast), ra_var.value.reshape(broadcast)
            y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale.reshape(broadcast) + bias.reshape(broadcast)
        else:
            size = self.group_size or x.shape[0]
            if x.shape[0] % size:
                raise ValueError(f"BatchNorm group_size={size} does not divide the batch of {x.shape[0]} "
                                 "examples: use a batch (per accumulation step) that is a multiple of it.")
            # normalization.normalize wants (groups, examples, features): features moved last.
            order = [a for a in range(x.ndim) if a not in axes] + list(axes)
            grouped = jnp.transpose(x32, order).reshape(x.shape[0] // size, -1, int(np.prod(features)))
            y, mean, var = normalization.normalize(grouped, scale.reshape(-1), bias.reshape(-1), self.epsilon)
            y = jnp.transpose(y.reshape([x.shape[a] for a in order]), np.argsort(order))
            count = grouped.shape[1]
            if not self.is_initializing():
                unbiased = count / max(count - 1, 1)
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * jnp.mean(mean, axis=0).reshape(features)
                ra_var.value = m * ra_var.value + (1 - m) * unbiased * jnp.mean(var, axis=0).reshape(features)
        return y.astype(self.dtype or x.dtype)


# How BatchNorm scales start: 'ones' (PyTorch >= 1.2, Flax) or 'uniform', U[0, 1) (PyTorch before
# 1.2, which the authors ran).
BN_SCALE_INITS = ("ones", "uniform")


def initial_bn_scales(params: Any, key: jax.Array, scale_init: str) -> Any:
    """`params` with every BatchNorm scale (the only parameters named 'scale') drawn U[0, 1) for
    'uniform', one key per scale folded from `key`; unchanged for 'ones'."""
    if scale_init == "ones":
        return params
    flat = traverse_util.flatten_dict(params)
    scales = sorted(path for path in flat if path[-1] == "scale")
    for index, path in enumerate(scales):
        flat[path] = jax.random.uniform(jax.random.fold_in(key, index), flat[path].shape, flat[path].dtype)
    return traverse_util.unflatten_dict(flat)


def batch_norm(train: bool, dtype: Any, name: str | None = None, *, group_size: int | None = None,
               axis: int | Sequence[int] = -1) -> BatchNorm:
    """A `BatchNorm` using batch statistics when training and the running ones otherwise."""
    return BatchNorm(use_running_average=not train, axis=axis, dtype=dtype, group_size=group_size, name=name)


def conv(features: int, kernel: int, stride: int = 1, padding: int | str = 0, *, use_bias: bool = False,
         kernel_init: nn.initializers.Initializer = kaiming_normal, dtype: Any,
         name: str | None = None) -> nn.Conv:
    """A square convolution with PyTorch-style explicit symmetric padding (or 'SAME'/'VALID');
    biases (rare here: only to import old checkpoints) start at zero."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, name=name,
                   conv_general_dilated=convolution.conv_general_dilated)


def dense(features: int, fan_in: int, *, use_bias: bool = True,
          kernel_init: nn.initializers.Initializer = kaiming_normal, dtype: Any,
          name: str | None = None) -> nn.Dense:
    """A dense layer reading `fan_in` features, its bias initialised as PyTorch's."""
    return nn.Dense(features, use_bias=use_bias, kernel_init=kernel_init,
                    bias_init=torch_default_bias(fan_in), dtype=dtype, name=name)


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


def avg_pool_floor(x: jax.Array, window: int) -> jax.Array:
    """Non-overlapping average pooling of (B, H, W, C) over `window` x `window` cells, dropping the
    last rows and columns that do not fill a window (PyTorch's `avg_pool2d(window, window)`)."""
    if window == 1:
        return x
    b, h, w, c = x.shape
    h, w = h // window * window, w // window * window
    return x[:, :h, :w].reshape(b, h // window, window, w // window, window, c).mean(axis=(2, 4))
