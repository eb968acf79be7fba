"""Shared test helpers: small configs built the way the real configs are."""

import os
import tempfile

import jax
import ml_collections
import pytest

# Many tests compile the same small programs again (each train_and_evaluate call builds its
# own jitted step): a persistent compilation cache shared by the session makes repeats cheap.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("WRNA_TEST_JAX_CACHE", tempfile.mkdtemp(prefix="wrna_jax_cache_")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
# The numerical tests compare against float32 references: on GPUs, JAX's default precision for
# float32 convolutions and matrix products is TF32 (about 1e-3 relative error), so ask for full
# float32 there. CPUs compute float32 either way.
jax.config.update("jax_default_matmul_precision", "highest")


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


def tiny_train_config(data_dir: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """configs/cluttered_mnist.py shrunk to seconds: 512 training canvases, batch 64."""
    from configs import cluttered_mnist

    config = cluttered_mnist.get_config(arg)
    config.dataset.data_dir = data_dir
    config.dataset.num_train, config.dataset.num_validation, config.dataset.num_test = 512, 96, 80
    config.dataset.sweep_distractors = (4, 16)
    config.batch_size, config.eval_batch_size = 64, 32
    config.num_epochs = 2
    config.schedule.boundaries_epochs = (1,)
    config.log_every_steps = 4
    config.attention.depth = 2
    config.num_mask_examples = 3
    return config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One TFDS data_dir for the whole session, so each tiny dataset is generated once."""
    return str(tmp_path_factory.mktemp("tfds"))
