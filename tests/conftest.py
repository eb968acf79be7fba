"""Shared test helpers: small configs built the way the real configs are."""

import ml_collections
import pytest


def model_config(backbone: str = "mnist_cnn", *, ad: int = 2, aw: int = 2, preset: str = "released",
                 num_classes: int = 10, depth: int = 10, width: int = 1, dtype: str = "float32",
                 **attention) -> ml_collections.ConfigDict:
    """A config with just the `model` and `attention` sections `create_model` reads."""
    config = ml_collections.ConfigDict()
    config.model = dict(backbone=backbone, num_classes=num_classes, depth=depth, width=width,
                        dropout=0.0, dtype=dtype)
    config.attention = dict(preset=preset, depth=ad, width=aw, **{"gates": True, **attention})
    return config


@pytest.fixture
def make_config():
    return model_config
