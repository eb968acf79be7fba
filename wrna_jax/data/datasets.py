"""From `config.dataset` to prepared TFDS builders and per-example preprocessing.

One entry per dataset family; training and evaluation ask here, never TFDS directly.
"""

from typing import Any, Mapping

import tensorflow_datasets as tfds

from wrna_jax.data import cluttered_mnist, pipeline

DATASETS = ("cluttered_mnist",)


def cluttered_mnist_builder(dataset: Mapping[str, Any], num_distractors: int | None = None,
                            **sizes: int) -> tfds.core.DatasetBuilder:
    """The prepared cluttered-MNIST builder of `dataset` (optionally with another D or sizes)."""
    fields = dict(num_distractors=dataset["num_distractors"], num_train=dataset["num_train"],
                  num_validation=dataset["num_validation"], num_test=dataset["num_test"])
    fields.update(sizes)
    if num_distractors is not None:
        fields["num_distractors"] = num_distractors
    config = cluttered_mnist.make_config(seed=int(dataset.get("seed", 0)),
                                         source=dataset["source"], **fields)
    return pipeline.load_builder("cluttered_mnist", dataset["data_dir"], {"config": config})


def get_builder(dataset: Mapping[str, Any]) -> tfds.core.DatasetBuilder:
    """The prepared builder for `config.dataset` (generated or downloaded when needed)."""
    name = dataset["name"]
    if name == "cluttered_mnist":
        return cluttered_mnist_builder(dataset)
    raise ValueError(f"Unknown dataset.name {name!r}; valid choices are {', '.join(map(repr, DATASETS))}.")


def preprocess_fn(dataset: Mapping[str, Any], train: bool) -> pipeline.PreprocessFn:
    """Per-example preprocessing for training (`train`) or evaluation."""
    del train  # Cluttered MNIST is already randomised at generation; no augmentation.
    return pipeline.preprocess_cluttered_mnist


def input_shape(builder: tfds.core.DatasetBuilder) -> tuple[int, ...]:
    """The (H, W, C) of one preprocessed image."""
    return tuple(builder.info.features["image"].shape)
