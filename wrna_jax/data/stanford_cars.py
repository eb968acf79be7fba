"""Stanford Cars as a TFDS builder over the official devkit layout (a manual download).

TFDS's `cars196` cannot be prepared any more: its download URLs answer 404
(tensorflow/datasets issues 5053 and 5656). The archives are still obtainable (mirrors of
`cars_train.tgz`, `cars_test.tgz`, `car_devkit.tgz` and `cars_test_annos_withlabels.mat`,
e.g. on Kaggle or academic torrents). Unpacked into the manual_dir they give:

    cars_train/00001.jpg ...                  8,144 training photos
    cars_test/00001.jpg ...                   8,041 test photos
    devkit/cars_meta.mat                      class_names: the 196 class names, class 1 first
    devkit/cars_train_annos.mat               annotations: bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname
    cars_test_annos_withlabels.mat            the same fields for the test photos (also accepted in devkit/)

The examples are those of TFDS `cars196` 2.1.0, so everything built on it (configs/cars.py, the
released recipe) reads this one the same way: `image` (the photo; JPEGs kept as they are,
other files re-encoded), `label` (named from cars_meta.mat; label = class - 1), `bbox` (the
box divided by the photo's width and height, as cars196 does, clipped to [0, 1]) and `id` (the
file stem). Photos that are missing or undecodable and annotations with a class outside 1..196
are skipped with a warning, counted in `builder.info.metadata['skipped']`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from wrna_jax.data.manual import ManualDownloadBuilder, encode_jpeg, find_manual_root, load_verified_image
from wrna_jax.errors import BadFileError, MissingFileError

NUM_CLASSES = 196
HOMEPAGE = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
META = "devkit/cars_meta.mat"
TRAIN_ANNOTATIONS = "devkit/cars_train_annos.mat"
TEST_ANNOTATIONS = "cars_test_annos_withlabels.mat"
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")

_LOG = logging.getLogger(__name__)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Stanford Cars cannot be downloaded by TFDS (its URLs answer 404: tensorflow/datasets#5053, #5656).
Obtain cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat (mirrors
of the official files, e.g. Kaggle's "stanford-cars-dataset") and unpack them into the manual_dir
(config.dataset.manual_dir; default <data_dir>/downloads/manual) so that it holds
cars_train/, cars_test/, {META}, {TRAIN_ANNOTATIONS} and {TEST_ANNOTATIONS}
(the last also accepted in devkit/; the same layout one folder down works too). Then run
python train.py --config=configs/cars.py:manual ... again."""


def _load_mat(path: epath.Path) -> dict[str, Any]:
    from scipy import io  # scipy comes with scikit-learn (mlxtend); only this builder needs it

    try:
        with path.open("rb") as f:
            return io.loadmat(f, squeeze_me=True, struct_as_record=False)
    except (ValueError, TypeError, OSError) as error:
        raise BadFileError(f"{path}: not a readable MATLAB file ({error}). Is the download complete?") from None


def read_class_names(root: epath.Path) -> list[str]:
    """The 196 class names of devkit/cars_meta.mat, class 1 first."""
    names = [str(name) for name in np.atleast_1d(_load_mat(root / META).get("class_names", []))]
    if len(names) != NUM_CLASSES:
        raise BadFileError(f"{root / META}: class_names has {len(names)} entries, expected {NUM_CLASSES}.")
    return names


def read_annotations(path: epath.Path) -> list[dict[str, Any]]:
    """The records of an annotations file: {field: value} for FIELDS."""
    records = []
    for record in np.atleast_1d(_load_mat(path).get("annotations", [])):
        missing = [field for field in FIELDS if not hasattr(record, field)]
        if missing:
            raise BadFileError(f"{path}: annotations lack the fields {missing} (needed: {list(FIELDS)}; the "
                               "test file must be cars_test_annos_withlabels.mat, with the classes).")
        records.append({field: getattr(record, field) for field in FIELDS})
    if not records:
        raise BadFileError(f"{path}: no annotations.")
    return records


def _find(root: epath.Path, *candidates: str) -> epath.Path:
    for candidate in candidates:
        if (root / candidate).is_file():
            return root / candidate
    raise MissingFileError(f"Stanford Cars: none of {list(candidates)} in {root}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


class StanfordCars(ManualDownloadBuilder, dataset="Stanford Cars", instructions=MANUAL_DOWNLOAD_INSTRUCTIONS):
    """Stanford Cars from the official devkit layout; the examples of TFDS cars196 2.1.0."""

    name = "stanford_cars"

    def _info(self) -> tfds.core.DatasetInfo:
        # Class names come from cars_meta.mat at preparation (stored with the data).
        return self.manual_info(
            "Stanford Cars: 16,185 photos of 196 car models (make, model, year), about half for "
            "training; with each photo's bounding box.", tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            {"bbox": tfds.features.BBoxFeature(), "id": tfds.features.Text(doc="File stem of the photo.")},
            HOMEPAGE, _CITATION)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager
                          ) -> dict[str, Iterator[tuple[str, dict]]]:
        root = find_manual_root(dl_manager, META, "Stanford Cars", MANUAL_DOWNLOAD_INSTRUCTIONS)
        self.info.features["label"].names = read_class_names(root)
        self.info.metadata["skipped"] = {}
        splits = {"train": (root / "cars_train", _find(root, TRAIN_ANNOTATIONS)),
                  "test": (root / "cars_test", _find(root, TEST_ANNOTATIONS, f"devkit/{TEST_ANNOTATIONS}"))}
        for split, (folder, _) in splits.items():
            if not folder.is_dir():
                raise MissingFileError(f"Stanford Cars: no {folder} (the {split} photos).\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {split: self._generate_examples(split, [(folder, r) for r in read_annotations(annotations)], _example)
                for split, (folder, annotations) in splits.items()}


def _example(item: tuple[epath.Path, dict[str, Any]]) -> tuple[str, dict] | str:
    folder, record = item
    path = folder / str(record["fname"])
    if not 1 <= int(record["class"]) <= NUM_CLASSES:
        _LOG.warning("Skipping %s: class %s is not in 1..%d.", path, record["class"], NUM_CLASSES)
        return "bad_class"
    if not path.is_file():
        _LOG.warning("Skipping missing photo %s (listed in the annotations).", path)
        return "missing_file"
    image = load_verified_image(path)
    if image is None:
        return "undecodable"
    width, height = image.size
    box = np.clip([float(record["bbox_y1"]) / height, float(record["bbox_x1"]) / width,
                   float(record["bbox_y2"]) / height, float(record["bbox_x2"]) / width], 0.0, 1.0)
    encoded = path.read_bytes() if image.format == "JPEG" else encode_jpeg(image)
    stem = path.stem
    return stem, {"image": encoded, "label": int(record["class"]) - 1, "bbox": tfds.features.BBox(*box), "id": stem}


_CITATION = """\
@inproceedings{krause20133d,
  title={3D Object Representations for Fine-Grained Categorization},
  author={Krause, Jonathan and Stark, Michael and Deng, Jia and Fei-Fei, Li},
  booktitle={4th International IEEE Workshop on 3D Representation and Recognition (3dRR-13)},
  year={2013}
}"""
