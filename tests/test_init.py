"""Initial weights against the authors' initialisation (docs/method.md, section 4): every conv and
linear weight kaiming normal over fan_in (std sqrt(2 / fan_in)); master's conv_reduce and every
bias PyTorch's default U(+-1/sqrt(fan_in)); BatchNorm weight 1 and bias 0; torchvision's ResNet
convolutions kaiming normal over fan_out; the CIFAR WRN classifier PyTorch's default nn.Linear.

Bounds (per tensor of n values, 5 standard errors: a false failure has probability ~1e-6):
sample mean within 5 sigma / sqrt(n); sample std within 5 / sqrt(2n) (normal) or
5 x 0.447 / sqrt(n) (uniform: kurtosis 9/5) of the formula's; a normal puts 4.55% of its values
beyond 2 sigma (within 5 binomial standard errors), a uniform none, and stays inside +-b.
"""

import re

import flax
import numpy as np
import pytest

from conftest import model_config
from wrna_jax.models import create_model
from wrna_jax.state import init_variables

MIN_SIZE = 256  # smaller tensors are checked for support and constants only


def check(name: str, value: np.ndarray, kind: str, scale: float) -> None:
    """kind 'normal' (std `scale`), 'uniform' (bound `scale`), 'ones' or 'zeros'."""
    value = np.asarray(value, np.float64).ravel()
    n = value.size
    if kind in ("ones", "zeros"):
        np.testing.assert_array_equal(value, 1.0 if kind == "ones" else 0.0, err_msg=name)
        return
    sigma = scale if kind == "normal" else scale / np.sqrt(3)
    if kind == "uniform":
        assert np.all(np.abs(value) <= scale), f"{name}: values outside +-{scale:.4g}"
    if n < MIN_SIZE:
        return
    assert abs(value.mean()) <= 5 * sigma / np.sqrt(n), f"{name}: mean {value.mean():.3g} (sigma {sigma:.3g})"
    spread = 5 / np.sqrt(2 * n) if kind == "normal" else 5 * 0.447 / np.sqrt(n)
    assert abs(value.std() / sigma - 1) <= spread, f"{name}: std {value.std():.4g}, expected {sigma:.4g} ({kind})"
    tail = float(np.mean(np.abs(value) > 2 * sigma))
    expected = 0.0455 if kind == "normal" else 0.0
    assert abs(tail - expected) <= 5 * np.sqrt(0.0455 * 0.9545 / n), f"{name}: {tail:.3%} beyond 2 sigma ({kind})"


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs per output of a Flax kernel: HWIO conv, (in, out) dense, (K, in, out) stacked heads."""
    return int(np.prod(shape[:-1])) if len(shape) != 3 else shape[1]


def expected(path: str, shape: tuple[int, ...], backbone: str, bias_fan_in: dict[str, int]) -> tuple[str, float]:
    """The authors' initialisation of the parameter at `path` (a '/'-joined Flax path)."""
    module, leaf = path.split("/")[-2:]
    if leaf in ("scale", "bias") and re.fullmatch(r"(.*_)?bn\d*", module):
        return ("ones" if leaf == "scale" else "zeros"), 0.0
    if leaf in ("bias", "head_bias"):
        return "uniform", 1 / np.sqrt(bias_fan_in[path])
    if module == "conv_reduce":
        return "uniform", 1 / np.sqrt(fan_in(shape))
    if backbone == "imagenet_resnet" and path.startswith("backbone/") and len(shape) == 4:
        return "normal", np.sqrt(2 / (shape[0] * shape[1] * shape[3]))  # torchvision: fan_out
    if backbone == "cifar_wrn" and path == "backbone/fc/kernel":
        return "uniform", 1 / np.sqrt(fan_in(shape))  # PyTorch's default nn.Linear
    return "normal", np.sqrt(2 / fan_in(shape))


@pytest.mark.parametrize("backbone, preset, ad, size, channels", [
    ("mnist_cnn", "released", 2, 40, 1),
    ("mnist_cnn", "paper", 2, 40, 1),
    ("cifar_wrn", "attend_rectify", 3, 32, 3),
    ("imagenet_resnet", "attend_rectify", 1, 64, 3),
])
def test_initial_weights_follow_the_authors_formulas(backbone, preset, ad, size, channels, monkeypatch):
    from wrna_jax.models import resnet

    monkeypatch.setitem(resnet.STAGE_SIZES, 14, (1, 1, 1, 1))  # a bottleneck "ResNet-14": every layer kind
    config = model_config(backbone, ad=ad, aw=2, preset=preset, depth=10 if backbone != "imagenet_resnet" else 14,
                          width=1)
    if backbone == "cifar_wrn":
        config.model.layout = "authors"
    model = create_model(config)
    params = flax.traverse_util.flatten_dict(init_variables(model, (size, size, channels), seed=0)["params"], sep="/")
    # Biases: the fan_in of the kernel beside them (the head bias: the head kernel's inputs).
    bias_fan_in = {}
    for path, value in params.items():
        if path.endswith("/kernel"):
            bias_fan_in[path[: -len("kernel")] + "bias"] = fan_in(value.shape)
        if path.endswith("head_kernel"):
            bias_fan_in[path.replace("head_kernel", "head_bias")] = value.shape[1]
    kinds = set()
    for path, value in params.items():
        kind, scale = expected(path, value.shape, backbone, bias_fan_in)
        check(path, np.asarray(value), kind, scale)
        kinds.add(kind)
    assert {"normal", "ones", "zeros"} <= kinds
    if backbone != "imagenet_resnet":
        assert "uniform" in kinds  # biases (and master's conv_reduce)
