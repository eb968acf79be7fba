"""The dataset registry: one entry per `config.dataset.name` holding what the code needs to know
about a dataset beyond its TFDS builder: classes, default splits, preprocessing family,
bounding-box feature, normalisation and where its builder comes from. Nothing here imports
TensorFlow.

The project's datasets are registered in `catalogue.py`; a new dataset is one file in this
package that calls `register_dataset` (with its TFDS builder, for one outside the TFDS catalogue)
and is found by name (`dataset_spec` imports the package's modules when a name is unknown).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Mapping
from wrna_jax.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    family: the preprocessing family (`preprocessing.PREPROCESSING`).
    tfds_name: the TFDS builder name (default: `name`); may contain '{fold}', filled from
      `config.dataset.fold`.
    train_split, eval_split, test_split: the defaults of the config's splits (evaluated during
      training: best checkpoint and early stop; eval.py's default).
    bbox_key: the box feature ('a/b' for nested features), if the dataset has one.
    mean, std: per-channel statistics of [0, 1] pixels for normalisation.
    module: imported before the TFDS builder is looked up (it registers a builder outside the
      TFDS catalogue).
    prepare: 'module:function' building the prepared builder from `config.dataset` itself, for
      datasets generated here rather than prepared by TFDS.
    unavailable_hint: added to the message when the dataset cannot be prepared (another way to get it).
    arrays: 'module:function' generating a split as the device feed's arrays with numpy,
      `(config.dataset, split, **overrides) -> data.arrays.ImageArrays`, for datasets that need
      no TFDS preparation to be fed from the device (`data/array_sources.py`).
    host_feed: whether a TFDS builder exists for the host feed (False: the device feed only).
    """

    name: str
    num_classes: int
    family: str
    tfds_name: str = ""
    train_split: str = "train"
    eval_split: str = "test"
    test_split: str = "test"
    bbox_key: str | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    module: str | None = None
    prepare: str | None = None
    unavailable_hint: str | None = None
    arrays: str | None = None
    host_feed: bool = True

    def builder_name(self, dataset: Mapping[str, Any]) -> str:
        """The TFDS builder name of `config.dataset`, e.g. 'uec_food100/fold2'."""
        name = self.tfds_name or self.name
        return name.format(fold=dataset["fold"]) if "{fold}" in name else name

    def split(self, dataset: Mapping[str, Any], field: str) -> str:
        """`config.dataset.<field>` ('train_split', ...), or this dataset's default when None."""
        return dataset.get(field) or getattr(self, field)


def _discover() -> None:
    """Imports every module of this package, so new dataset files register themselves."""
    package = importlib.import_module("wrna_jax.data")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"wrna_jax.data.{module.name}")


DATASETS: Registry[DatasetSpec] = Registry("dataset.name", discover=_discover)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.add(spec.name, spec)


def dataset_spec(dataset: Mapping[str, Any] | str) -> DatasetSpec:
    """The registry entry of `config.dataset` (or of a dataset name)."""
    return DATASETS[dataset if isinstance(dataset, str) else dataset["name"]]
