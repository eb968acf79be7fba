"""A spatial transformer (Jaderberg et al., 2015) for the cluttered-MNIST STN baseline.

The paper's Figure 4e compares the attention CNN with the same CNN behind an STN: a small
localisation net predicts an affine transform of the input, which is then resampled
bilinearly before the CNN sees it. The transform is the identity plus a scaled correction
from the last layer, whose weights and bias start at zero, so an untrained STN passes its input
through unchanged.

Coordinates are normalised to [-1, 1] with -1 and 1 at the centres of the corner pixels
(PyTorch's `align_corners=True`); samples outside the image read zeros.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.layers import max_pool

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def affine_grid(theta: jax.Array, height: int, width: int) -> jax.Array:
    """(B, 2, 3) affine maps of output (x, y, 1) to input (x, y) -> (B, H, W, 2) source (x, y)."""
    ys, xs = jnp.meshgrid(jnp.linspace(-1.0, 1.0, height), jnp.linspace(-1.0, 1.0, width), indexing="ij")
    grid = jnp.stack([xs, ys, jnp.ones_like(xs)], axis=-1)  # (H, W, 3)
    return jnp.einsum("hwk,bjk->bhwj", grid, theta)


def bilinear_sample(images: jax.Array, grid: jax.Array) -> jax.Array:
    """Samples (B, H, W, C) `images` at normalised (x, y) `grid` (B, H', W', 2); zeros outside."""
    batch, height, width, channels = images.shape
    x = (grid[..., 0] + 1.0) * (width - 1) / 2.0
    y = (grid[..., 1] + 1.0) * (height - 1) / 2.0
    x0, y0 = jnp.floor(x), jnp.floor(y)
    flat = images.reshape(batch, height * width, channels)
    out = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1.0 - jnp.abs(x - xi)) * (1.0 - jnp.abs(y - yi))
            inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
            index = (jnp.clip(yi, 0, height - 1) * width + jnp.clip(xi, 0, width - 1)).astype(jnp.int32)
            values = jnp.take_along_axis(flat, index.reshape(batch, -1, 1), axis=1)
            out = out + values.reshape(*index.shape, channels) * (weight * inside)[..., None]
    return out.astype(images.dtype)


class SpatialTransformer(nn.Module):
    """Localisation net (maxpool 2, conv5x5 20, maxpool 2, ReLU, conv5x5 20, ReLU, dense 50,
    ReLU, dense 6) predicting an affine transform; returns the resampled input, same shape.

    The transform is identity + `delta_scale` x (the last layer's output): as in Jaderberg et
    al., the localisation net learns more slowly than the classifier (here 100x in effect for
    the last layer); at the classifier's learning rate (0.1) it warps the digit out of view
    within a few dozen steps and training stalls at chance."""

    features: int = 20
    hidden: int = 50
    delta_scale: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = max_pool(x.astype(self.dtype), 2, 2)
        h = nn.relu(max_pool(nn.Conv(self.features, (5, 5), padding="VALID", dtype=self.dtype)(h), 2, 2))
        h = nn.relu(nn.Conv(self.features, (5, 5), padding="VALID", dtype=self.dtype)(h))
        h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h.reshape(h.shape[0], -1)))
        delta = nn.Dense(6, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                         dtype=self.dtype, name="theta")(h)
        theta = jnp.asarray(IDENTITY, jnp.float32) + self.delta_scale * delta.astype(jnp.float32)
        grid = affine_grid(theta.reshape(-1, 2, 3), x.shape[1], x.shape[2])
        return bilinear_sample(x, grid)
