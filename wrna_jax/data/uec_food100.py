"""UEC Food-100 as a TFDS builder over the user's manual download (not in the TFDS catalogue).

Source: Matsuda, Hoashi and Yanai, "Recognition of Multiple-Food Images by Detecting
Candidate Regions", ICME 2012; http://foodcam.mobi/dataset100.html. The zip
``UECFOOD100.zip`` unpacks to ``UECFOOD100/`` holding ``category.txt`` (``id<TAB>name``, ids
1..100) and one folder per class, ``1/`` .. ``100/``, with ``<image_id>.jpg`` photos and
``bb_info.txt`` (``img x1 y1 x2 y2``, pixel boxes). A photo with several dishes appears in the
folder of each of its classes, each time with that dish's box.

Each example is one (class, box) pair: the photo cropped to the box (``PIL`` semantics: columns
``x1 .. x2 - 1`` and rows ``y1 .. y2 - 1``, clipped to the photo; no EXIF rotation is applied,
boxes refer to the stored pixel grid), re-encoded as a quality-95 JPEG. The paper crops to the
boxes first, too. Features: ``image`` (RGB crop), ``label`` (``ClassLabel`` named from
``category.txt``, label = id - 1) and ``image_id`` (the photo's file stem).

Split protocol (there is no official split): every photo goes to fold
``image_fold(image_id)`` = SHA-256 of ``"uec_food100:<image_id>"`` modulo 5, so all the boxes
of a multi-dish photo share a fold and a photo never lands in two splits. Config ``fold<k>``
(k = 0..4, default ``fold0``) has split ``test`` = fold k and ``train`` = the other four folds:
about 80% / 20% of the photos (the exact ratio depends on the hashes; the assignment of a photo
never depends on which other photos are present). The five configs give a 5-fold
cross-validation; each stores its own full copy of the crops.

Photos that are missing, undecodable or truncated, boxes that are empty after clipping and
malformed ``bb_info.txt`` lines are skipped with a logged warning; the counts by reason are
kept in ``builder.info.metadata['skipped']``.

Build it from the manual download (the module must be imported to register the builder)::

    import tensorflow_datasets as tfds
    from wrna_jax.data import uec_food100  # noqa: F401  (registers 'uec_food100')

    builder = tfds.builder('uec_food100', data_dir='~/tensorflow_datasets', config='fold0')
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir='~/manual/uec_food100'))  # Holds UECFOOD100/ (or its contents).
    train, test = builder.as_dataset(split=['train', 'test'])

"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from wrna_jax.data.manual import (
    FoldConfig, ManualDownloadBuilder, encode_jpeg, find_manual_root, load_verified_image, read_text, record_skips)
from wrna_jax.errors import BadFileError, MissingFileError

NUM_CLASSES = 100
NUM_FOLDS = 5
HOMEPAGE = "http://foodcam.mobi/dataset100.html"
ARCHIVE = "UECFOOD100.zip"

_LOG = logging.getLogger(__name__)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
UEC Food-100 is not downloadable by TFDS. Download {ARCHIVE} from {HOMEPAGE} and unzip it
into the manual_dir, so that <manual_dir>/UECFOOD100/category.txt and the class folders
<manual_dir>/UECFOOD100/1/ .. <manual_dir>/UECFOOD100/100/ (each with bb_info.txt and the
.jpg photos) exist (the contents of UECFOOD100/ directly in manual_dir work too). Then run
  builder = tfds.builder('uec_food100', data_dir=DATA_DIR)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=MANUAL_DIR))
(manual_dir defaults to <data_dir>/downloads/manual)."""


# ---------------------------------------------------------------- shared manual-download helpers


# ---------------------------------------------------------------- UEC Food-100


def image_fold(image_id: str) -> int:
    """The cross-validation fold (0..4) of photo `image_id`: a seeded hash, stable forever."""
    digest = hashlib.sha256(f"uec_food100:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % NUM_FOLDS


class BoxRecord(NamedTuple):
    """One (class, box) line of a class folder's bb_info.txt."""

    label: int
    image_id: str
    box: tuple[int, int, int, int]
    path: epath.Path
    key: str


def read_categories(root: epath.Path) -> list[str]:
    """The 100 class names of `root/category.txt`, in id order (id 1 first)."""
    path = root / "category.txt"
    names: dict[int, str] = {}
    for line in read_text(path).splitlines():
        fields = line.strip().split("\t", 1) if "\t" in line else line.strip().split(None, 1)
        if len(fields) != 2 or not fields[0].isdigit():
            continue  # The `id name` header and blank lines.
        names[int(fields[0])] = fields[1].strip()
    if sorted(names) != list(range(1, NUM_CLASSES + 1)):
        raise BadFileError(f"{path} must list the class ids 1..{NUM_CLASSES} once each; found "
                           f"{len(names)} ids. Is the {ARCHIVE} extraction complete?")
    return [names[i] for i in range(1, NUM_CLASSES + 1)]


def read_boxes(root: epath.Path, skipped: collections.Counter) -> list[BoxRecord]:
    """Every (class, box) of the class folders `root/1 .. root/100`, in folder and line order.

    Malformed lines are counted in `skipped['malformed_box_line']`.
    """
    missing = [str(i) for i in range(1, NUM_CLASSES + 1)
               if not (root / str(i) / "bb_info.txt").is_file()]
    if missing:
        raise MissingFileError(
            f"UEC Food-100: {len(missing)} class folders lack bb_info.txt under {root} (e.g. "
            f"{root / missing[0] / 'bb_info.txt'}). Is the {ARCHIVE} extraction complete?")
    records = []
    for class_id in range(1, NUM_CLASSES + 1):
        folder = root / str(class_id)
        lines = read_text(folder / "bb_info.txt")
        for line_no, line in enumerate(lines.splitlines(), start=1):
            fields = line.split()
            if not fields or (line_no == 1 and fields[0] == "img"):
                continue
            try:
                if len(fields) != 5:
                    raise ValueError(f"expected 5 fields, got {len(fields)}")
                box = tuple(int(round(float(value))) for value in fields[1:])
            except ValueError as err:
                _LOG.warning("Skipping malformed line %d of %s (%r): %s", line_no,
                             folder / "bb_info.txt", line, err)
                skipped["malformed_box_line"] += 1
                continue
            records.append(BoxRecord(label=class_id - 1, image_id=fields[0], box=box,
                                     path=folder / f"{fields[0]}.jpg",
                                     key=f"{class_id}/{fields[0]}/{line_no}"))
    return records


def crop_to_box(image: Image.Image, box: tuple[int, int, int, int]) -> Image.Image | None:
    """`image` cropped to `box` = (x1, y1, x2, y2) clipped to the image; None if empty."""
    width, height = image.size
    x1, y1, x2, y2 = box
    x1, x2 = np.clip([x1, x2], 0, width).tolist()
    y1, y2 = np.clip([y1, y2], 0, height).tolist()
    if x2 <= x1 or y2 <= y1:
        return None
    return image.crop((x1, y1, x2, y2))


@dataclasses.dataclass(eq=False)
class UecFood100Config(FoldConfig):
    """Which hash fold (0..4) of the photo ids is the test split (about 20%); leave `name` empty
    (it becomes `fold<k>`)."""


class UecFood100(ManualDownloadBuilder, dataset="UEC Food-100",
                 instructions=MANUAL_DOWNLOAD_INSTRUCTIONS):
    """UEC Food-100 box crops from the manual download, split by a hash of the photo id."""

    name = "uec_food100"
    BUILDER_CONFIGS = [UecFood100Config(test_fold=k) for k in range(NUM_FOLDS)]
    DEFAULT_BUILDER_CONFIG_NAME = "fold0"

    def _info(self) -> tfds.core.DatasetInfo:
        # Class names come from category.txt at preparation (stored with the data).
        return self.manual_info(
            "UEC Food-100: 100 mostly Japanese dishes; each example is one dish's bounding-box crop. "
            + self.builder_config.description, tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            {"image_id": tfds.features.Text(doc="File stem of the source photo.")}, HOMEPAGE, _CITATION)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager
                          ) -> dict[str, Iterator[tuple[str, dict]]]:
        root = find_manual_root(dl_manager, "category.txt", "UEC Food-100",
                                MANUAL_DOWNLOAD_INSTRUCTIONS)
        self.info.features["label"].names = read_categories(root)
        self.info.metadata["skipped"] = {}
        skipped: collections.Counter = collections.Counter()
        records = read_boxes(root, skipped)
        record_skips(self.info, "UEC Food-100", "bb_info.txt", skipped)
        test_fold = self.builder_config.test_fold
        splits: dict[str, list[BoxRecord]] = {"train": [], "test": []}
        for record in records:
            splits["test" if image_fold(record.image_id) == test_fold else "train"].append(record)
        return {split: self._generate_examples(split, split_records, _example) for split, split_records in splits.items()}


def _example(record: BoxRecord) -> tuple[str, dict] | str:
    if not record.path.is_file():
        _LOG.warning("Skipping missing image %s (listed in bb_info.txt).", record.path)
        return "missing_file"
    image = load_verified_image(record.path)
    if image is None:
        return "undecodable"
    crop = crop_to_box(image, record.box)
    if crop is None:
        _LOG.warning("Skipping empty box %s of %s (%dx%d).", record.box, record.path, *image.size)
        return "empty_box"
    return record.key, {"image": encode_jpeg(crop), "label": record.label, "image_id": record.image_id}


_CITATION = """\
@inproceedings{matsuda2012recognition,
  title={Recognition of Multiple-Food Images by Detecting Candidate Regions},
  author={Matsuda, Yuji and Hoashi, Hajime and Yanai, Keiji},
  booktitle={IEEE International Conference on Multimedia and Expo (ICME)},
  year={2012}
}"""
