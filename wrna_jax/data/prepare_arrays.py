"""Prepares a TFDS dataset's split as the device feed's arrays (`data/arrays.py`), once, where
TensorFlow is installed: the first `train.py` or `eval.py` run that feeds the dataset from the
device does it (`data/array_sources.py`); later runs, TensorFlow or not, map the files.

Fine-grained images go through the decoded cache's deterministic stage
(`preprocessing.FineGrainedPreprocess.decode_and_resize`: decode, box when configured, shorter
side `resize_size`, uint8), so the device crops see the pixels the host's decoded cache sees.
CIFAR images are stored as they are.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from wrna_jax.data import arrays, prepare, preprocessing
from wrna_jax.data.registry import dataset_spec
from wrna_jax.data.tensorflow_cpu import tf


def prepare_split(dataset: Mapping[str, Any], split: str, directory: str) -> None:
    """Writes TFDS split `split` of `config.dataset` (file order) to `directory`."""
    spec = dataset_spec(dataset)
    builder = prepare.get_builder(dataset)
    count = builder.info.splits[split].num_examples
    start = time.perf_counter()
    read_config = tfds.ReadConfig(try_autocache=False)
    if spec.family == "fine_grained":
        images = dataset["images"]
        decode = preprocessing.FineGrainedPreprocess(
            train=False, image_size=images["image_size"], resize_size=images["resize_size"],
            bbox_key=spec.bbox_key if images["crop_to_bbox"] else None, antialias=images["antialias"],
            decoded_cache=True)
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decode.decoders, read_config=read_config)
        ds = ds.map(decode.decode_and_resize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        long = arrays.long_side(images["resize_size"], images["max_aspect_ratio"])
        shape = (images["resize_size"], long, 3)
        layout = dict(long=long, image_size=images["image_size"])
    else:
        ds = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config,
                                decoders=tfds.decode.PartialDecoding({"image": True, "label": True}))
        shape, layout = tuple(builder.info.features["image"].shape), {}
    out = arrays.open_images(directory, (count, *shape))
    pairs = ((example["image"], int(example["label"])) for example in tfds.as_numpy(ds.prefetch(64)))
    stacked = arrays.stack(pairs, shape, count, out=out, **layout)
    images_info = {key: (dataset.get("images") or {}).get(key) for key in arrays.IMAGE_SETTINGS}
    names = list(getattr(builder.info.features["label"], "names", None) or [])
    arrays.save(stacked, directory, {"dataset": spec.name, "builder": builder.name, "version": str(builder.version),
                                     "split": split, "images": images_info, "class_names": names})
    logging.info("Prepared %d examples of %s/%s in %s (%.1f GB) in %.0f s.", count, spec.name, split, directory,
                 stacked.nbytes / 1e9, time.perf_counter() - start)
