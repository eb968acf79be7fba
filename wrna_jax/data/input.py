"""`create_input(config.dataset)`: the one entry point of training and evaluation into the data.

It prepares the dataset (`prepare.get_builder`: downloaded, read from a manual download or
generated) and knows everything the trainer needs of it: the model's input shape, the number of
classes, the splits and their sizes, and this process's batches of any split, preprocessed by the
dataset's family (`preprocessing.PREPROCESSING`) in the sharded, deterministic and resumable
streams of `pipeline`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from wrna_jax.data import pipeline, prepare, preprocessing
from wrna_jax.data.registry import DatasetSpec, dataset_spec


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
        """The split name of `config.dataset.<field>` ('train_split', 'eval_split', 'test_split')."""
        return self.spec.split(self.dataset, field)

    def num_examples(self, split: str) -> int:
        return self.builder.info.splits[split].num_examples

    def has_split(self, split: str) -> bool:
        try:
            self.builder.info.splits[split]
        except (KeyError, ValueError):
            return False
        return True

    def train_batches(self, batch_size: int, *, seed: int, start_step: int = 0, process_index: int = 0,
                      process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """This process's infinite stream of training batches of `batch_size`, from batch
        `start_step` of the stream on (see `pipeline.create_split`)."""
        ds = pipeline.create_split(
            self.builder, self.split("train_split"), batch_size, train=True, seed=seed,
            preprocess_fn=self._preprocess(train=True), process_index=process_index,
            process_count=process_count, cache=self.dataset["cache"], shuffle_buffer=self.dataset["shuffle_buffer"],
            start_step=start_step)
        return pipeline.as_numpy_batches(ds)

    def eval_batches(self, split: str, batch_size: int, *, ten_crop: bool | None = None, process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """This process's share of `split`, padded to full batches (`mask` False on padding) so
        every process yields the same number; `ten_crop` overrides the dataset's setting."""
        ds = pipeline.create_split(
            self.builder, split, batch_size, train=False, seed=0,
            preprocess_fn=self._preprocess(train=False, ten_crop=ten_crop), process_index=process_index,
            process_count=process_count, pad_last_batch=True, cache=False)
        return pipeline.as_numpy_batches(ds)

    def _preprocess(self, train: bool, ten_crop: bool | None = None) -> pipeline.PreprocessFn:
        return preprocessing.preprocessing(self.spec.family).make(self.spec, self.dataset, train, ten_crop)


def create_input(dataset: Mapping[str, Any], **overrides: Any) -> Input:
    """The prepared dataset of `config.dataset` (`overrides`: see `prepare.get_builder`)."""
    spec = dataset_spec(dataset)
    family = preprocessing.preprocessing(spec.family)
    builder = prepare.get_builder(dataset, **overrides)
    return Input(spec, dataset, builder, tuple(family.shape(spec, dataset, builder)))
