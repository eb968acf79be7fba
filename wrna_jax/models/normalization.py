"""Batch normalisation in training mode as a function of (groups, examples, features) arrays:
the statistics and the normalised output, with a faster lowering on the CPU.

With YNNPACK on (wrna_jax/xla_flags.py), XLA:CPU computes a large reduction (a per-channel sum
over batch and positions) about 2x slower than the same sum as a matrix product with a vector of
ones, and autodiff of BatchNorm holds several such reductions. On the CPU the statistics are
therefore such products, and the gradient is BatchNorm's closed form (dx = scale/(n sigma)
(n g - sum g - xhat sum g xhat), two reductions): forward and backward on the MNIST CNN's bn2
maps at batch 128 take 1.8 ms instead of 2.65 (11.4 without YNNPACK; benchmarks/cpu_lowerings.py).
Other backends compute the plain form. Both give
the same values up to float32 summation order (tests/test_models.py).

The variance is the mean of the squared deviations from the mean (two passes, as PyTorch), not
E[x^2] - E[x]^2: the one-pass form cancels catastrophically when |mean| >> std (a gate
BatchNorm's inputs, say), while the two-pass one stays within float32 rounding of exact.
"""

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def normalize(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(y, mean, var) of float32 `x` (G, n, F): each of the G groups normalised by its own mean
    and biased variance over its n examples, y = (x - mean) / sqrt(var + epsilon) * scale + bias
    with `scale`, `bias` of shape (F,); mean and var (G, F)."""
    return jax.lax.platform_dependent(x, scale, bias, cpu=lambda *a: _normalize_products(*a, epsilon),
                                      default=lambda *a: _normalize_plain(*a, epsilon))


def _variance(x: jax.Array, mean: jax.Array, centred: jax.Array, mean_of) -> jax.Array:
    """Biased variance (G, F) of (G, n, F) `x` from its per-group `mean` and `centred` = x - mean:
    the mean (`mean_of`, over the examples) of the squared deviations. The arguments also fit the
    one-pass E[x^2] - E[x]^2, which benchmarks/train_step.py and cpu_lowerings.py time against this."""
    del x, mean
    return mean_of(jnp.square(centred))


def _normalize_plain(x, scale, bias, epsilon):
    mean = jnp.mean(x, axis=1)
    centred = x - mean[:, None]
    var = _variance(x, mean, centred, lambda a: jnp.mean(a, axis=1))
    y = centred * jax.lax.rsqrt(var + epsilon)[:, None] * scale + bias
    return y, mean, var


def _sums(a: jax.Array) -> jax.Array:
    """Per-group sums over the examples of (G, n, F) `a`, as a batched matrix-vector product."""
    return jnp.einsum("gnf,gn->gf", a, jnp.ones(a.shape[:2], a.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _normalize_products(x, scale, bias, epsilon):
    n = x.shape[1]
    mean = _sums(x) / n
    centred = x - mean[:, None]
    var = _variance(x, mean, centred, lambda a: _sums(a) / n)
    y = centred * (jax.lax.rsqrt(var + epsilon) * scale)[:, None] + bias
    return y, mean, var


def _normalize_products_forward(x, scale, bias, epsilon):
    # symbolic_zeros: the primals come wrapped (value, perturbed), the cotangents of outputs
    # nothing depends on as SymbolicZero.
    x, scale, bias = x.value, scale.value, bias.value
    y, mean, var = _normalize_products(x, scale, bias, epsilon)
    return (y, mean, var), (x, scale, mean, var)


def _normalize_products_backward(epsilon, residuals, cotangents):
    x, scale, mean, var = residuals
    g, g_mean, g_var = cotangents
    n = x.shape[1]
    inv_std = jax.lax.rsqrt(var + epsilon)[:, None]
    centred = x - mean[:, None]
    xhat = centred * inv_std
    g_bias = _sums(g)
    g_scale = _sums(g * xhat)
    dx = (scale * inv_std / n) * (n * g - g_bias[:, None] - xhat * g_scale[:, None])
    # The statistics' own cotangents: in training only y is differentiated (the running
    # statistics are not), so these are symbolic zeros and cost nothing.
    if not isinstance(g_mean, SymbolicZero):
        dx = dx + g_mean[:, None] / n
    if not isinstance(g_var, SymbolicZero):
        dx = dx + 2.0 * g_var[:, None] * centred / n
    return dx, jnp.sum(g_scale, axis=0), jnp.sum(g_bias, axis=0)


_normalize_products.defvjp(_normalize_products_forward, _normalize_products_backward, symbolic_zeros=True)
