"""A synthetic fine-grained dataset shaped like Stanford Dogs, generated with numpy: for
benchmarks, tests and accelerator machines that have no data and no TensorFlow.

`config.dataset.synthetic` sets the number of classes, of training and test images and the seed.
Images have the sizes of photos around 500 x 375 (width ~ N(500, 60), height ~ N(375, 50), one
in five portrait), stored as the prepared fine-grained layout stores a photo: shorter side
`resize_size`, longer side scaled with it and cut to the layout's longest side
(`data/arrays.py`). Each class has a coarse 8 x 8 colour pattern; an image is its class's
pattern stretched over the image, shifted by a random amount, plus uniform noise, so a model can
learn it but not from one pixel. Only the device feed reads it (there is no TFDS builder).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from wrna_jax.data import arrays

SPLITS = ("train", "test")
_PATTERN = 8   # side of each class's colour pattern
_NOISE = 48    # uniform noise amplitude, in pixel levels


def generate(dataset: Mapping[str, Any], split: str) -> arrays.ImageArrays:
    """Split `split` of `config.dataset` in the prepared layout."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: the synthetic dataset has splits {SPLITS}.")
    settings = dataset["synthetic"]
    images_settings = dataset["images"]
    short = images_settings["resize_size"]
    long = arrays.long_side(short, images_settings["max_aspect_ratio"])
    count = int(settings[f"num_{split}"])
    classes = int(settings["num_classes"])
    patterns = np.random.default_rng(np.random.SeedSequence([settings["seed"], 0])).integers(
        0, 256, (classes, _PATTERN, _PATTERN, 3)).astype(np.int16)
    rng = np.random.default_rng(np.random.SeedSequence([settings["seed"], 1 + SPLITS.index(split)]))
    labels = np.arange(count) % classes
    rng.shuffle(labels)
    widths = np.clip(rng.normal(500, 60, count), 300, 800)
    heights = np.clip(rng.normal(375, 50, count), 200, 600)
    portrait = rng.random(count) < 0.2
    stored_long = np.floor(short * np.maximum(widths, heights) / np.minimum(widths, heights)).astype(int)

    def image(n: int) -> np.ndarray:
        width = min(stored_long[n], long)
        shift = rng.integers(0, _PATTERN, 2)
        rows = (np.arange(short) * _PATTERN // short + shift[0]) % _PATTERN
        cols = (np.arange(width) * _PATTERN // width + shift[1]) % _PATTERN
        noise = rng.integers(-_NOISE, _NOISE + 1, (short, width, 3), dtype=np.int16)
        return np.clip(patterns[labels[n]][rows][:, cols] + noise, 0, 255).astype(np.uint8)

    out = arrays.stack(((image(n), labels[n]) for n in range(count)), (short, long, 3), count)
    return arrays.ImageArrays(out.images, out.sizes, portrait, out.labels)
