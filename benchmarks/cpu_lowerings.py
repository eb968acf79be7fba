"""The CPU lowerings of wrna_jax/models against what XLA:CPU does without them, one kernel at a
time at the cluttered-MNIST CNN's shapes (batch 128), in the same run:

* conv1 (5x5, 1 -> 32 channels, 40x40 input): its input gradient, XLA's against the col2im one
  (models/convolution.py); conv2's (3x3, 32 -> 64, 18x18) forward pass, XLA's;
* BatchNorm in training, forward and backward, on the 18x18x32 maps bn2 normalises (conv1
  pooled): the plain form under autodiff against models/normalization.py, and that with the
  one-pass variance E[x^2] - E[x]^2 instead of the two-pass one; a per-channel sum over such
  maps, jnp.sum against the product with a vector of ones;
* 2x2 max pooling of conv1's output, forward and backward: flax's reduce_window against the
  reshape in models/layers.py.

    python benchmarks/cpu_lowerings.py [--repeats 20] [--no-cpu-flags]

`--no-cpu-flags` leaves XLA:CPU's defaults (wrna_jax/xla_flags.py) off, e.g. to see what
YNNPACK does to conv2's forward pass.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine, median_time, one_pass_variance, traced_with  # noqa: E402

BATCH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-cpu-flags", action="store_true")
    args = parser.parse_args()
    if not args.no_cpu_flags:
        from wrna_jax import xla_flags

        xla_flags.apply_cpu_defaults()
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from wrna_jax.models import convolution, layers, normalization

    rng = np.random.default_rng(0)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32))
    nhwc = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"))
    xla_conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((0, 0), (0, 0)), **nhwc)
    our_conv = lambda x, w: convolution.conv_general_dilated(x, w, (1, 1), ((0, 0), (0, 0)), **nhwc)

    def input_gradient(conv, x, w, g):
        return jax.vjp(lambda x: conv(x, w), x)[1](g)[0]

    def forward_backward(fn, x, g):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(g)

    image, kernel1, g1 = normal(BATCH, 40, 40, 1), normal(5, 5, 1, 32), normal(BATCH, 36, 36, 32)
    maps, kernel2 = normal(BATCH, 18, 18, 32), normal(3, 3, 32, 64)
    grouped, scale, bias, g2 = maps.reshape(1, -1, 32), jnp.ones(32), jnp.zeros(32), normal(1, BATCH * 18 * 18, 32)
    pooled_g = normal(BATCH, 18, 18, 32)
    cases = [
        ("conv1 input gradient", "XLA", jax.jit(lambda x, w, g: input_gradient(xla_conv, x, w, g)), (image, kernel1, g1)),
        ("", "col2im (ours)", jax.jit(lambda x, w, g: input_gradient(our_conv, x, w, g)), (image, kernel1, g1)),
        ("conv2 forward", "XLA", jax.jit(xla_conv), (maps, kernel2)),
        ("BatchNorm fwd+bwd (bn2)", "plain + autodiff",
         jax.jit(lambda x, g: forward_backward(lambda x: normalization._normalize_plain(x, scale, bias, 1e-5)[0], x, g)),
         (grouped, g2)),
        ("", "products + closed form (ours)",
         jax.jit(lambda x, g: forward_backward(lambda x: normalization._normalize_products(x, scale, bias, 1e-5)[0], x, g)),
         (grouped, g2)),
        ("", "the same, one-pass variance",
         jax.jit(traced_with(normalization, "_variance", one_pass_variance, lambda x, g: forward_backward(
             lambda x: normalization._normalize_products(x, scale, bias, 1e-5)[0], x, g))),
         (grouped, g2)),
        ("per-channel sum (bn2 map)", "jnp.sum", jax.jit(lambda x: jnp.sum(x, axis=(0, 1, 2))), (maps,)),
        ("", "ones-product (ours)", jax.jit(lambda x: normalization._sums(x.reshape(1, -1, 32))), (maps,)),
        ("2x2 max pool fwd+bwd (conv1)", "flax reduce_window",
         jax.jit(lambda x, g: forward_backward(lambda x: nn.max_pool(x, (2, 2), (2, 2)), x, g)), (g1, pooled_g)),
        ("", "reshape (ours)",
         jax.jit(lambda x, g: forward_backward(lambda x: layers.max_pool(x, 2, 2), x, g)), (g1, pooled_g)),
    ]
    print(f"machine: {machine()}")
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')}")
    print(f"batch {BATCH}, float32, median of {args.repeats}")
    print(f"{'kernel':30s} {'lowering':32s} {'ms':>8s} {'x first':>8s}")
    first = None
    for kernel, lowering, fn, inputs in cases:
        ms = 1000 * median_time(lambda: fn(*inputs), warmup=2, repeats=args.repeats)
        first = ms if kernel else first
        print(f"{kernel:30s} {lowering:32s} {ms:8.2f} {ms / first:8.2f}", flush=True)


if __name__ == "__main__":
    main()
