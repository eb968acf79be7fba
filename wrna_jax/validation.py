"""Range checks of a config's numbers and switches, before any work: a negative learning rate
or a momentum of 1.5 would otherwise train (or diverge) without a word.

Checks that need the model or the data live with them (`models/factory.py` for the attention
settings, `data/canvases.py` for the canvas generator, `steps.check_grad_accum`); this module
checks the fields every config has (`configs/default.py`) and the optional dataset sections.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from wrna_jax.data.registry import dataset_spec
from wrna_jax.errors import ConfigError
from wrna_jax.optim import SCHEDULES


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive(value: Any) -> bool:
    return _number(value) and value > 0


def non_negative(value: Any) -> bool:
    return _number(value) and value >= 0


def at_least_one(value: Any) -> bool:
    return _integer(value) and value >= 1


def count(value: Any) -> bool:
    return _integer(value) and value >= 0


def fraction(value: Any) -> bool:
    return _number(value) and 0 <= value < 1


def switch(value: Any) -> bool:
    return isinstance(value, bool)


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def all_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda values: isinstance(values, Sequence) and all(check(v) for v in values)


# field path -> (check, what a valid value is)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (count, "a whole number >= 0"),
    "batch_size": (at_least_one, "a whole number >= 1"),
    "grad_accum_steps": (at_least_one, "a whole number >= 1 (1 = no accumulation)"),
    "num_epochs": (positive, "a number > 0"),
    "eval_batch_size": (at_least_one, "a whole number >= 1"),
    "eval_every_epochs": (positive, "a number > 0 (fractions evaluate within an epoch)"),
    "log_every_steps": (at_least_one, "a whole number >= 1"),
    "early_stop_patience": (count, "0 (off) or a whole number of evaluations"),
    "checkpoint_keep": (at_least_one, "a whole number >= 1"),
    "num_devices": (optional(at_least_one), "None (all devices) or a whole number >= 1"),
    "optimizer.learning_rate": (positive, "a finite number > 0"),
    "optimizer.head_lr_multiplier": (positive, "a finite number > 0"),
    "optimizer.momentum": (fraction, "a number in [0, 1)"),
    "optimizer.nesterov": (switch, "True or False"),
    "optimizer.weight_decay": (non_negative, "a finite number >= 0"),
    "schedule.kind": (lambda kind: kind in SCHEDULES, f"one of {', '.join(map(repr, SCHEDULES))}"),
    "schedule.factor": (positive, "a finite number > 0"),
    "schedule.every_epochs": (positive, "a number of epochs > 0"),
    "schedule.boundaries_epochs": (all_of(non_negative), "a tuple of epochs >= 0"),
    "schedule.warmup_epochs": (non_negative, "a number of epochs >= 0"),
    "model.depth": (at_least_one, "a whole number >= 1"),
    "model.width": (at_least_one, "a whole number >= 1"),
    "model.dropout": (fraction, "a probability in [0, 1)"),
    "model.conv_bias": (switch, "True or False"),
    "attention.depth": (count, "a whole number >= 0 (0 = the plain backbone)"),
    "attention.width": (at_least_one, "a whole number >= 1"),
    "attention.gates": (switch, "True or False"),
    "attention.regularizer_weight": (optional(non_negative), "None (the preset's) or a number >= 0"),
    "dataset.cache": (switch, "True or False"),
    "dataset.images.image_size": (at_least_one, "a whole number of pixels >= 1"),
    "dataset.images.resize_size": (at_least_one, "a whole number of pixels >= 1"),
    "dataset.images.ten_crop": (switch, "True or False"),
    "dataset.images.crop_to_bbox": (switch, "True or False"),
    "dataset.images.antialias": (switch, "True or False"),
    "dataset.images.decoded_cache": (switch, "True or False"),
    "dataset.validation.protocol": (lambda p: p in ("holdout", "authors"),
                                    "'holdout' (a validation split held out of train) or 'authors' (select on test)"),
    "dataset.validation.fraction": (lambda f: _number(f) and 0 < f < 1, "a fraction of each class in (0, 1)"),
    "dataset.validation.seed": (count, "a whole number >= 0"),
    "evals.attention_masks.examples": (count, "a whole number >= 0"),
    "evals.per_class.most_confused": (count, "a whole number >= 0"),
    "evals.distractor_sweep.distractors": (all_of(count), "a tuple of whole numbers >= 0"),
}


def _lookup(config: ml_collections.ConfigDict, path: str) -> tuple[bool, Any]:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_data_dir(dataset: ml_collections.ConfigDict) -> None:
    """Raises a ConfigError when `config.dataset.data_dir` cannot hold the dataset: a file where
    the directory should be, or a directory that cannot be written while the dataset is not in
    it yet (a read-only data_dir that holds the prepared dataset is fine). Creates nothing: the
    write test is a temporary file in the nearest existing directory, removed at once. Remote
    paths (gs://...) are left to TFDS."""
    data_dir = dataset.get("data_dir")
    if not data_dir or "://" in str(data_dir):
        return
    flag = f"config.dataset.data_dir={data_dir}"
    path = os.path.abspath(os.path.expanduser(str(data_dir)))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == path else f" ({existing} is a file)"
        raise ConfigError(f"{flag} is a file, not a directory{where}: point it at a directory "
                          "(created if missing) or leave it None for ~/tensorflow_datasets.")
    name = dataset_spec(dataset).builder_name(dataset).split("/")[0].split(":")[0]
    if os.path.isdir(os.path.join(path, name)):
        return  # prepared there (or being prepared): reading needs no write access
    try:
        handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"{flag} cannot be written ({error.strerror or error}) and does not hold "
                          f"{name} yet: choose a writable data_dir, or one where {name} is "
                          "prepared.") from None


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a ConfigError listing every field outside its range (fields a config does not
    have are skipped), and for a dataset or class count that does not exist or a data_dir
    that cannot hold the dataset."""
    problems = []
    for path, (check, valid) in RULES.items():
        present, value = _lookup(config, path)
        if present and not check(value):
            problems.append(f"config.{path}={value!r} must be {valid}")
    if problems:
        raise ConfigError("; ".join(problems) + ".")
    classes = dataset_spec(config.dataset).num_classes
    if config.model.num_classes not in (None, classes):
        raise ConfigError(f"model.num_classes={config.model.num_classes}, but {config.dataset.name} has "
                          f"{classes} classes: leave model.num_classes None (it is taken from the dataset).")
    check_data_dir(config.dataset)
