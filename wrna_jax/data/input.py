"""`create_input(config.dataset)`: the one entry point of training and evaluation into the data.

It prepares the dataset (`prepare.get_builder`: downloaded, read from a manual download or
generated) and knows everything the trainer needs of it: the model's input shape, the number of
classes, the splits and their sizes, and this process's batches of any split, preprocessed by the
dataset's family (`preprocessing.PREPROCESSING`) in the sharded, deterministic and resumable
streams of `pipeline`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from wrna_jax.data import holdout, pipeline, prepare, preprocessing
from wrna_jax.data.registry import DatasetSpec, dataset_spec
from wrna_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Input:
    """A prepared dataset as `config.dataset` describes it."""

    spec: DatasetSpec
    dataset: Mapping[str, Any]
    builder: Any
    input_shape: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def split(self, field: str) -> str:
        """The split name of `config.dataset.<field>` ('train_split', 'eval_split', 'test_split');
        the default eval_split is `holdout.HELD_OUT` under the 'holdout' protocol."""
        return holdout.split_name(self.spec, self.dataset, field)

    @functools.cached_property
    def held_out(self) -> np.ndarray | None:
        """Indices (in the TFDS train split) of the validation examples held out of training
        under the 'holdout' protocol (`data/holdout.py`), else None."""
        if holdout.protocol(self.dataset) != "holdout":
            return None
        section = self.dataset["validation"]
        labels = pipeline.read_labels(self.builder, self.spec.split(self.dataset, "train_split"))
        return holdout.held_out_indices(labels, section["fraction"], section["seed"])

    def _subset(self, split: str) -> tuple[str, np.ndarray | None]:
        """The TFDS split that `split` reads and the indices of its examples it keeps (None: all):
        under the 'holdout' protocol the train split loses the held-out examples, which are
        the split `holdout.HELD_OUT`."""
        base = self.spec.split(self.dataset, "train_split")
        if split == holdout.HELD_OUT:
            if self.held_out is None:
                raise ConfigError(f"split {split!r} exists only with config.dataset.validation.protocol='holdout'.")
            return base, self.held_out
        if split == base and self.held_out is not None:
            total = self.builder.info.splits[base].num_examples
            return base, np.setdiff1d(np.arange(total), self.held_out)
        return split, None

    def class_names(self) -> list[str]:
        """The label names the TFDS builder knows (its ClassLabel's), else '0', '1', ..."""
        names = getattr(self.builder.info.features["label"], "names", None) or []
        return list(names) if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]

    def num_examples(self, split: str) -> int:
        base, keep = self._subset(split)
        return self.builder.info.splits[base].num_examples if keep is None else len(keep)

    def has_split(self, split: str) -> bool:
        if split == holdout.HELD_OUT:
            return self.held_out is not None
        try:
            self.builder.info.splits[split]
        except (KeyError, ValueError):
            return False
        return True

    def train_batches(self, batch_size: int, *, seed: int, start_step: int = 0, process_index: int = 0,
                      process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """This process's infinite stream of training batches of `batch_size`, from batch
        `start_step` of the stream on, in the order of `data/order.py` (see
        `pipeline.create_split`: this process's share of the training examples is held in host
        memory)."""
        base, keep = self._subset(self.split("train_split"))
        ds = pipeline.create_split(
            self.builder, base, batch_size, train=True, seed=seed, keep=keep,
            preprocess_fn=self._preprocess(train=True), process_index=process_index,
            process_count=process_count, cache=self.dataset["cache"], start_step=start_step,
            cache_file=self._cache_file(base, keep, process_index, process_count))
        return pipeline.as_numpy_batches(ds)

    def eval_batches(self, split: str, batch_size: int, *, ten_crop: bool | None = None, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """This process's share of `split`, padded to full batches (`mask` False on padding) so
        every process yields the same number; `ten_crop` overrides the dataset's setting."""
        base, keep = self._subset(split)
        ds = pipeline.create_split(
            self.builder, base, batch_size, train=False, seed=0, keep=keep,
            preprocess_fn=self._preprocess(train=False, ten_crop=ten_crop), process_index=process_index,
            process_count=process_count, pad_last_batch=True, cache=False)
        return pipeline.as_numpy_batches(ds)

    def _cache_file(self, split: str, keep: np.ndarray | None, process_index: int, process_count: int) -> str | None:
        """Under `config.dataset.cache_dir`: a file prefix naming everything the cached examples
        depend on (dataset, version, split, kept examples, process share, image settings).
        'share' names the strided training shares of `data/order.py`: files cached before them
        (contiguous shares) are not read."""
        directory = self.dataset.get("cache_dir")
        if not directory:
            return None
        what = json.dumps({"share": "strided", "images": dict(self.dataset.get("images") or {}),
                           "keep": None if keep is None else hashlib.sha256(np.asarray(keep).tobytes()).hexdigest()},
                          sort_keys=True)
        name = (f"{self.builder.name}_{self.builder.version}_{split}_{process_index}of{process_count}_"
                f"{hashlib.sha256(what.encode()).hexdigest()[:12]}")
        os.makedirs(os.path.expanduser(directory), exist_ok=True)
        return os.path.join(os.path.expanduser(directory), name.replace("/", "_"))

    def _preprocess(self, train: bool, ten_crop: bool | None = None) -> pipeline.PreprocessFn:
        return preprocessing.preprocessing(self.spec.family).make(self.spec, self.dataset, train, ten_crop)


def create_input(dataset: Mapping[str, Any], **overrides: Any) -> Input:
    """The prepared dataset of `config.dataset` (`overrides`: see `prepare.get_builder`)."""
    spec = dataset_spec(dataset)
    family = preprocessing.preprocessing(spec.family)
    builder = prepare.get_builder(dataset, **overrides)
    return Input(spec, dataset, builder, tuple(family.shape(spec, dataset, builder)))
