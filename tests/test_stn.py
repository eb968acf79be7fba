"""The spatial-transformer baseline: identity at init, known warps, config validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cluttered_mnist
from wrna_jax.models import create_model
from wrna_jax.models.stn import SpatialTransformer, affine_grid, bilinear_sample


def _images(shape=(2, 40, 40, 1), seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), shape)


# Bilinear sampling: 4 weighted terms per output in [0, 1] (error within 4 u) at coordinates
# computed from linspace and a 3-term affine map on a 40-pixel grid (within ~10 u x 40 pixels,
# moving a value by at most that times its slope, 1 per pixel): 1e-5 bounds both with room.
SAMPLING_ATOL = 1e-5


def test_identity_init_reproduces_input():
    x = _images()
    stn = SpatialTransformer()
    variables = jax.jit(stn.init)(jax.random.PRNGKey(1), x)
    np.testing.assert_allclose(jax.jit(stn.apply)(variables, x), x, atol=SAMPLING_ATOL)


def test_translation_moves_a_pixel_by_whole_pixels():
    height, width = 12, 10
    x = np.zeros((1, height, width, 2), np.float32)
    x[0, 5, 6] = (1.0, 2.0)
    shift_x, shift_y = 3, -2  # output (r, c) reads input (r + shift_y, c + shift_x)
    theta = jnp.asarray([[[1.0, 0.0, 2.0 * shift_x / (width - 1)],
                          [0.0, 1.0, 2.0 * shift_y / (height - 1)]]])
    out = np.asarray(bilinear_sample(jnp.asarray(x), affine_grid(theta, height, width)))
    expected = np.zeros_like(x)
    expected[0, 5 - shift_y, 6 - shift_x] = (1.0, 2.0)
    np.testing.assert_allclose(out, expected, atol=SAMPLING_ATOL)


def test_half_pixel_shift_interpolates_and_outside_is_zero():
    x = jnp.arange(1.0, 5.0).reshape(1, 1, 4, 1)
    theta = jnp.asarray([[[1.0, 0.0, 2.0 * 0.5 / 3], [0.0, 1.0, 0.0]]])
    out = bilinear_sample(x, affine_grid(theta, 1, 4))[0, 0, :, 0]
    # Each output reads halfway to its right neighbour; the last one is half outside (zero).
    np.testing.assert_allclose(out, [1.5, 2.5, 3.5, 2.0], atol=SAMPLING_ATOL)


def test_stn_model_from_config_and_the_transform_gets_gradients():
    config = cluttered_mnist.get_config("baseline")
    config.model.stn = True
    x = _images((4, 40, 40, 1))
    shapes = jax.eval_shape(create_model(config).init, jax.random.PRNGKey(0), x)
    assert shapes["params"]["backbone"]["stn"]["theta"]["kernel"].shape == (50, 6)  # hidden 50 -> 6
    assert "stn" not in jax.eval_shape(create_model(cluttered_mnist.get_config("baseline")).init,
                                       jax.random.PRNGKey(0), x)["params"]["backbone"]

    stn = SpatialTransformer()
    variables = jax.jit(stn.init)(jax.random.PRNGKey(1), x)
    target = _images((4, 40, 40, 1), seed=2)
    grads = jax.jit(jax.grad(lambda p: jnp.sum((stn.apply({"params": p}, x) - target) ** 2)))(variables["params"])
    assert float(jnp.abs(grads["theta"]["bias"]).sum()) > 0.0


def test_stn_on_another_backbone_is_refused():
    config = cluttered_mnist.get_config()
    config.model.backbone = "cifar_wrn"
    config.model.depth = 10
    config.model.stn = True
    with pytest.raises(ValueError, match="model.stn=True is not implemented for the 'cifar_wrn' backbone"):
        create_model(config)
