"""The FLOPs count the throughput benchmark's MFU rests on, against hand-counted layers."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks.common import matmul_flops


def test_matmul_flops_counts_convolutions_and_products_inside_nested_jit():
    kernel = jnp.ones((3, 3, 4, 16))  # HWIO
    grouped = jnp.ones((1, 1, 2, 16))  # 2 groups, each sees 2 of the 4 input features
    dense = jnp.ones((16, 10))

    @jax.jit
    def inner(x):
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def fn(x):
        y = jax.nn.relu(inner(x))  # (2, 8, 8, 16)
        g = jax.lax.conv_general_dilated(x, grouped, (2, 2), "VALID", feature_group_count=2,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # (2, 4, 4, 16)
        return y.mean((1, 2)) @ dense, g

    expected = (2 * (2 * 8 * 8 * 16) * (3 * 3 * 4)    # 3x3 conv: 2 FLOPs x outputs x fan-in
                + 2 * (2 * 4 * 4 * 16) * (1 * 1 * 2)  # grouped 1x1 conv: fan-in 2 per group
                + 2 * (2 * 10) * 16)                  # dense
    assert matmul_flops(fn, jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)) == pytest.approx(expected)


def test_matmul_flops_of_wrn50_2_matches_the_published_multiply_adds():
    """WRN-50-2 at 224x224 is 11.4 G multiply-adds per image (torchvision's model card: 11.4 GFLOPS
    counted as multiply-adds), i.e. 22.8 GFLOPs."""
    from configs import default
    from wrna_jax.models import create_backbone

    config = default.get_config()
    config.model.update(backbone="imagenet_resnet", depth=50, width=2, num_classes=1000)
    model = create_backbone(config.model)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))))
    flops = matmul_flops(lambda v, x: model.apply(v, x).logits, variables,
                         jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert flops / 2 / 1e9 == pytest.approx(11.4, abs=0.05)
