"""A dataset family added from one file: 'stripes' (a vertical stripe at one of 4 columns, the
label), its TFDS builder, registry entry and preprocessing family."""

from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from wrna_jax.data.preprocessing import Preprocessing, register_preprocessing
from wrna_jax.data.registry import DatasetSpec, register_dataset
from wrna_jax.data.tensorflow_cpu import tf


class ToyStripes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=4)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(32, 0), "test": self._generate_examples(16, 1)}

    def _generate_examples(self, count: int, seed: int):
        rng = np.random.default_rng(seed)
        for i in range(count):
            label = i % 4
            image = rng.integers(0, 60, (8, 8, 1)).astype(np.uint8)
            image[:, 2 * label:2 * label + 2] = 255
            yield i, {"image": image, "label": label}


def prepare(dataset: Mapping[str, Any]) -> tfds.core.DatasetBuilder:
    builder = ToyStripes(data_dir=dataset["data_dir"])
    builder.download_and_prepare()
    return builder


register_dataset(DatasetSpec("toy_stripes", 4, "stripes", eval_split="test", prepare="toy_dataset:prepare"))
register_preprocessing("stripes", Preprocessing(
    make=lambda spec, dataset, train, ten_crop: lambda example: {
        "image": tf.cast(example["image"], tf.float32) / 255.0, "label": tf.cast(example["label"], tf.int32)},
    shape=lambda spec, dataset, builder: (8, 8, 1)))
