"""Prepared arrays: a split as uint8 numpy arrays ready to be held in accelerator memory, and
their format on disk. Imports no TensorFlow.

The device feed (`wrna_jax/feeds.py`) keeps whole splits in device memory and crops, flips and
normalises them inside compiled code, so the arrays hold what is deterministic about each image
and nothing else:

* `images` uint8 (N, S, L, C): image n occupies `images[n, :h, :w]` with (h, w) = `sizes[n]`;
  the rest is zero padding. Fine-grained images are stored as the decoded cache computes them
  (decoded, cut to the box when configured, resized to shorter side `resize_size` = S, rounded
  to uint8) with their longer side along the width: portrait images are stored transposed
  (`transposed[n]`) and transposed back after cropping, so one (S, L) layout holds both
  orientations. L = floor(S x `max_aspect_ratio`): an image whose longer side exceeds L keeps
  the L columns centred where the centre crop is (`fine_grained_layout`), so the centre crop is
  unchanged and only random crops and ten-crop corners of such extreme aspect ratios lose the
  two ends. Cluttered-MNIST canvases and CIFAR images are stored as they are (h, w = S, L).
* `labels` int32 (N,).

Why plain `.npy` files: `np.load(mmap_mode='r')` maps them without a copy or a decoder, the
device upload reads them at disk speed, any tool reads them, and they need no dependency (array
records or TFRecords would decode every example once more to build the same arrays).
On disk a prepared split is a directory holding `images.npy`, `sizes.npy`, `transposed.npy`,
`labels.npy` and `info.json` (what it was prepared from and with which image settings); it is
written under a temporary name and renamed, so an interrupted preparation leaves nothing that
looks complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

FILES = ("images", "sizes", "transposed", "labels")
# The image settings (`config.dataset.images`) prepared fine-grained arrays depend on.
IMAGE_SETTINGS = ("resize_size", "image_size", "crop_to_bbox", "antialias", "max_aspect_ratio")


@dataclasses.dataclass(frozen=True)
class ImageArrays:
    """One split in the prepared layout (module docstring)."""

    images: np.ndarray      # uint8 (N, S, L, C)
    sizes: np.ndarray       # int32 (N, 2): stored (h, w) of each image
    transposed: np.ndarray  # bool (N,)
    labels: np.ndarray      # int32 (N,)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images {self.images.dtype} {self.images.shape}: expected uint8 (N, S, L, C).")
        if not (len(self.images) == len(self.sizes) == len(self.transposed) == n):
            raise ValueError(f"images {len(self.images)}, sizes {len(self.sizes)}, transposed "
                             f"{len(self.transposed)}, labels {n}: expected one of each per example.")

    @property
    def num_examples(self) -> int:
        return int(len(self.labels))

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, name).nbytes for name in FILES))

    def take(self, indices: np.ndarray) -> ImageArrays:
        """The examples `indices` (e.g. a training split without its held-out examples)."""
        return ImageArrays(*(np.asarray(getattr(self, name))[indices] for name in FILES))

    @classmethod
    def uniform(cls, images: np.ndarray, labels: np.ndarray) -> ImageArrays:
        """Arrays of same-sized images (cluttered MNIST, CIFAR): no padding, nothing transposed."""
        n, h, w = images.shape[:3]
        return cls(np.asarray(images, np.uint8), np.tile(np.array([[h, w]], np.int32), (n, 1)),
                   np.zeros(n, bool), np.asarray(labels, np.int32))


def long_side(resize_size: int, max_aspect_ratio: float) -> int:
    """L of the fine-grained layout: the longest stored side."""
    return int(np.floor(resize_size * max_aspect_ratio))


def fine_grained_layout(image: np.ndarray, long: int, image_size: int) -> tuple[np.ndarray, bool]:
    """A resized image (shorter side S) -> (its stored (S, <= long, C) form, transposed).

    Portrait images are transposed. When the longer side exceeds `long`, the kept columns start
    at round((W - image_size) / 2) - (long - image_size) / 2 (round half to even, as the centre
    crop), so the centre crop of the stored image is the centre crop of the whole one.
    """
    transposed = image.shape[0] > image.shape[1]
    if transposed:
        image = np.swapaxes(image, 0, 1)
    width = image.shape[1]
    if width > long:
        start = int(np.round((width - image_size) / 2)) - (long - image_size) // 2
        image = image[:, start:start + long]
    return image, transposed


def stack(examples: Iterable[tuple[np.ndarray, int]], shape: tuple[int, int, int], count: int,
          long: int | None = None, image_size: int | None = None, out: np.ndarray | None = None) -> ImageArrays:
    """`count` (image, label) pairs laid out in arrays of `shape` = (S, L, C), each image through
    `fine_grained_layout` when `long` is given (images resized to shorter side S); `out` may be
    a memory-mapped (count, S, L, C) array to fill (`open_images`)."""
    images_out = np.zeros((count, *shape), np.uint8) if out is None else out
    sizes = np.zeros((count, 2), np.int32)
    transposed = np.zeros(count, bool)
    label_out = np.zeros(count, np.int32)
    n = -1
    for n, (image, label) in enumerate(examples):
        if n >= count:
            raise ValueError(f"more than the announced {count} examples.")
        image = np.asarray(image, np.uint8)
        if long is not None:
            image, transposed[n] = fine_grained_layout(image, long, image_size)
        h, w = image.shape[:2]
        if h > shape[0] or w > shape[1] or image.shape[2] != shape[2]:
            raise ValueError(f"example {n}: image {image.shape} does not fit the layout {shape}.")
        images_out[n, :h, :w] = image
        sizes[n], label_out[n] = (h, w), label
    if n + 1 != count:
        raise ValueError(f"{n + 1} examples, {count} announced.")
    return ImageArrays(images_out, sizes, transposed, label_out)


def partial_dir(directory: str) -> str:
    """Where a split is written before it is renamed to `directory`."""
    return directory.rstrip("/") + ".partial"


def open_images(directory: str, shape: tuple[int, ...]) -> np.ndarray:
    """A new memory-mapped uint8 `images.npy` of `shape` for the split to be saved in
    `directory`, so a split larger than memory is written image by image."""
    partial = partial_dir(directory)
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    return np.lib.format.open_memmap(os.path.join(partial, "images.npy"), "w+", np.uint8, shape)


def save(arrays: ImageArrays, directory: str, info: Mapping[str, Any]) -> None:
    """Writes `arrays` and `info` to `directory` (through `partial_dir`, renamed at the end);
    images from `open_images` are already there."""
    partial = partial_dir(directory)
    written = os.path.join(partial, "images.npy")
    in_place = isinstance(arrays.images, np.memmap) and os.path.exists(written) \
        and os.path.samefile(arrays.images.filename, written)
    if not in_place:
        shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial, exist_ok=True)
    for name in FILES:
        if name == "images" and in_place:
            arrays.images.flush()
        else:
            np.save(os.path.join(partial, f"{name}.npy"), getattr(arrays, name))
    with open(os.path.join(partial, "info.json"), "w") as f:
        json.dump({**info, "num_examples": arrays.num_examples}, f, indent=2, sort_keys=True)
    os.replace(partial, directory)


def exists(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, "info.json"))


def load(directory: str) -> tuple[ImageArrays, dict[str, Any]]:
    """The arrays of `directory` (memory-mapped, read-only) and its info."""
    with open(os.path.join(directory, "info.json")) as f:
        info = json.load(f)
    return ImageArrays(*(np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r") for name in FILES)), info
