"""Where the device feed's arrays come from, by dataset: generated with numpy (cluttered MNIST,
the synthetic fine-grained set: `DatasetSpec.arrays`), or prepared once from the TFDS builder
into `prepared_dir` (`data/prepare_arrays.py`, which needs TensorFlow) and memory-mapped from
there afterwards. Imports no TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Mapping
from typing import Any

from wrna_jax.data import arrays
from wrna_jax.data.registry import dataset_spec

def generated(dataset: Mapping[str, Any]) -> bool:
    """Whether the dataset's arrays are generated with numpy (no preparation, no TensorFlow)."""
    return dataset_spec(dataset).arrays is not None


def prepared_dir(dataset: Mapping[str, Any], split: str) -> str:
    """`<prepared root>/<builder>/<settings hash>/<split>`: the prepared root is
    `config.dataset.prepared_dir`, else `<data_dir>/wrna_jax_arrays` (data_dir defaulting to
    TFDS's ~/tensorflow_datasets); the hash covers the image settings the arrays depend on."""
    spec = dataset_spec(dataset)
    root = dataset.get("prepared_dir") or os.path.join(
        dataset.get("data_dir") or os.path.join("~", "tensorflow_datasets"), "wrna_jax_arrays")
    images = dataset.get("images") or {}
    settings = json.dumps({key: images.get(key) for key in arrays.IMAGE_SETTINGS}, sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    return os.path.join(os.path.expanduser(root), spec.builder_name(dataset).replace("/", "_"), digest,
                        split.replace("/", "_"))


def is_prepared(dataset: Mapping[str, Any], split: str) -> bool:
    return arrays.exists(prepared_dir(dataset, split))


def split_arrays(dataset: Mapping[str, Any], split: str, **overrides: Any) -> arrays.ImageArrays:
    """All of TFDS split `split` of `config.dataset`, in file order, in the prepared layout:
    generated, or read from `prepared_dir` (prepared there first when TensorFlow is installed)."""
    spec = dataset_spec(dataset)
    if spec.arrays is not None:
        module, function = spec.arrays.split(":")
        return getattr(importlib.import_module(module), function)(dataset, split, **overrides)
    directory = prepared_dir(dataset, split)
    if not arrays.exists(directory):
        from wrna_jax.data import prepare_arrays  # imports TensorFlow: only to prepare

        prepare_arrays.prepare_split(dataset, split, directory)
    return arrays.load(directory)[0]
