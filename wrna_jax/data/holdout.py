"""A validation split held out of the training split, stratified by class (`config.dataset.
validation`): the fine-grained datasets have no validation split, and selecting the best epoch
on the test split (as the authors' logs did) reports an optimistic test accuracy.

protocol 'holdout' (default of the fine-grained configs): `fraction` of each class's training
examples, drawn with `seed`, form the split `HELD_OUT`, which is evaluated during training (best
checkpoint, early stopping); training uses the rest; the test split is evaluated once, by
eval.py. protocol 'authors': train on all of train and evaluate test during training, as the
authors did, to compare with their numbers. The held-out examples depend only on the labels,
the fraction and the seed, so every process computes the same split.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from wrna_jax.errors import ConfigError

HELD_OUT = "held_out"  # the split name of the held-out validation examples
PROTOCOLS = ("holdout", "authors")


def split_name(spec: Any, dataset: Mapping[str, Any], field: str) -> str:
    """The split name of `config.dataset.<field>` ('train_split', 'eval_split', 'test_split') for
    registry entry `spec`; the default eval_split is `HELD_OUT` under the 'holdout' protocol."""
    if field == "eval_split" and not dataset.get("eval_split") and protocol(dataset) == "holdout":
        return HELD_OUT
    return spec.split(dataset, field)


def protocol(dataset: Mapping[str, Any]) -> str | None:
    """'holdout', 'authors', or None for datasets without a `validation` section."""
    section = dataset.get("validation")
    return None if section is None else section["protocol"]


def held_out_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out examples: round(fraction x n_c) of each class c's n_c
    examples (at least one, and at least one left for training), chosen by a permutation
    seeded with (seed, c)."""
    labels = np.asarray(labels)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < 2:
            raise ConfigError(f"class {cls} has {len(members)} training example(s): a validation split held "
                              "out of train needs at least 2 per class; use dataset.validation.protocol='authors'.")
        take = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        order = np.random.default_rng(np.random.SeedSequence([seed, int(cls)])).permutation(members)
        held.append(order[:take])
    return np.sort(np.concatenate(held))
