"""Adience age and gender as a TFDS builder over the user's manual download (not in TFDS).

Source: Eidinger, Enbar and Hassner, "Age and Gender Estimation of Unfiltered Faces", IEEE TIFS
2014; https://talhassner.github.io/home/projects/Adience/Adience-data.html. The download has
``fold_0_data.txt`` .. ``fold_4_data.txt`` (tab-separated, header ``user_id original_image
face_id age gender x y dx dy tilt_ang fiducial_yaw_angle fiducial_score``) and the face crops
``aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>`` and/or
``faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>``. The five folds are
subject-exclusive. Images are read from ``aligned/`` when that folder exists (the in-plane
aligned faces Levi and Hassner's benchmark uses), otherwise from ``faces/``; the original JPEG
bytes are stored unchanged when they are an RGB JPEG, anything else is re-encoded as RGB JPEG.

Protocol (the paper's): 5-fold cross-validation over the official folds, score = mean over the
folds. Config ``<task>_fold<k>`` (task ``age`` or ``gender``, k = 0..4; default ``age_fold0``)
has split ``test`` = the rows of ``fold_<k>_data.txt`` and ``train`` = the rows of the other
four files. Each config stores its own copy of the images.

Labels:

* age: the 8 groups ``0-2 4-6 8-12 15-20 25-32 38-43 48-53 60-100``. A row's age, an interval
  ``(a, b)`` or a single age ``n`` (= ``(n, n)``), gets the group whose range contains it
  entirely. This maps the known off-grid annotations ``(38, 42)`` -> 38-43, ``(27, 32)`` ->
  25-32 and single ages such as ``2``, ``29`` or ``42``; rows whose age straddles groups or
  falls between them (``(38, 48)``, ``(8, 23)``, ``35``, ``13``), and ``None``/empty ages, are
  skipped (count under ``unknown_age``).
* gender: ``f`` -> 0, ``m`` -> 1; ``u`` and empty are skipped (count under ``unknown_gender``).

Rows whose image is missing, undecodable or truncated are skipped too; every skip is logged as
a warning and counted by reason in ``builder.info.metadata['skipped']``.

Build it from the manual download (the module must be imported to register the builder)::

    import tensorflow_datasets as tfds
    from wrna_jax.data import adience  # noqa: F401  (registers 'adience')

    for task in ('age', 'gender'):
        for k in range(5):
            builder = tfds.builder('adience', data_dir='~/tensorflow_datasets',
                                   config=f'{task}_fold{k}')
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir='~/manual/adience'))  # Holds fold_*_data.txt and aligned/.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import re
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from wrna_jax.data.manual import (
    FoldConfig, ManualDownloadBuilder,
    encode_jpeg, find_manual_root, load_verified_image, read_text, record_skips)
from wrna_jax.errors import BadFileError, MissingFileError

NUM_FOLDS = 5
TASKS = ("age", "gender")
AGE_GROUPS = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))
AGE_NAMES = tuple(f"{low}-{high}" for low, high in AGE_GROUPS)
GENDER_NAMES = ("f", "m")
HOMEPAGE = "https://talhassner.github.io/home/projects/Adience/Adience-data.html"
REQUIRED_COLUMNS = ("user_id", "original_image", "face_id", "age", "gender")
# (folder, file-name prefix) of the face crops, in order of preference.
IMAGE_FOLDERS = (("aligned", "landmark_aligned_face"), ("faces", "coarse_tilt_aligned_face"))

_LOG = logging.getLogger(__name__)
_INTERVAL = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Adience is not downloadable by TFDS. From the download linked on the Adience page
{HOMEPAGE}
get the five fold files fold_0_data.txt .. fold_4_data.txt and aligned.tar.gz (or
faces.tar.gz), and put them in the manual_dir so that <manual_dir>/fold_0_data.txt ..
<manual_dir>/fold_4_data.txt exist and the archive is extracted to
<manual_dir>/aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image> (or
<manual_dir>/faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>); one
subfolder holding all of this works too. Then run
  builder = tfds.builder('adience', data_dir=DATA_DIR, config='age_fold0')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=MANUAL_DIR))
(manual_dir defaults to <data_dir>/downloads/manual)."""


def age_group(age: str) -> int | None:
    """Index in AGE_GROUPS of the group containing `age` ('(a, b)' or 'n'); None if none."""
    age = age.strip()
    match = _INTERVAL.fullmatch(age)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
    elif age.isdigit():
        low = high = int(age)
    else:
        return None
    for index, (group_low, group_high) in enumerate(AGE_GROUPS):
        if group_low <= low <= high <= group_high:
            return index
    return None


def gender_label(gender: str) -> int | None:
    """0 for 'f', 1 for 'm', None for 'u', empty or anything else."""
    gender = gender.strip().lower()
    return GENDER_NAMES.index(gender) if gender in GENDER_NAMES else None


class FaceRecord(NamedTuple):
    """One labelled row of a fold file."""

    fold: int
    user_id: str
    image_id: str  # <user_id>/<face_id>.<original_image>
    path: epath.Path
    label: int
    key: str


def image_folder(root: epath.Path) -> tuple[epath.Path, str]:
    """The face-crop folder under `root` (aligned/ preferred) and its file-name prefix."""
    for folder, prefix in IMAGE_FOLDERS:
        if (root / folder).is_dir():
            return root / folder, prefix
    raise MissingFileError(
        f"Adience: neither {root / 'aligned'} nor {root / 'faces'} exists next to the fold "
        f"files.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def read_folds(root: epath.Path, task: str, skipped: collections.Counter) -> list[FaceRecord]:
    """The labelled rows of `root/fold_<k>_data.txt`, k = 0..4, in fold and line order.

    Rows without a `task` label are counted in `skipped['unknown_age' | 'unknown_gender']`.
    """
    if task not in TASKS:
        raise BadFileError(f"task={task!r}: must be one of {TASKS}.")
    missing = [name for name in (f"fold_{k}_data.txt" for k in range(NUM_FOLDS))
               if not (root / name).is_file()]
    if missing:
        raise MissingFileError(f"Adience: {', '.join(missing)} missing from {root}.\n"
                               f"{MANUAL_DOWNLOAD_INSTRUCTIONS}")
    folder, prefix = image_folder(root)
    label_fn = age_group if task == "age" else gender_label
    unknown: collections.Counter = collections.Counter()
    records = []
    for fold in range(NUM_FOLDS):
        path = root / f"fold_{fold}_data.txt"
        rows = csv.DictReader(read_text(path).splitlines(), delimiter="\t")
        rows.fieldnames = [name.strip() for name in rows.fieldnames or []]
        absent = [column for column in REQUIRED_COLUMNS if column not in rows.fieldnames]
        if absent:
            raise BadFileError(f"{path}: header lacks the columns {absent}; is this an Adience "
                               "fold_<k>_data.txt?")
        for line_no, row in enumerate(rows, start=2):
            fields = {column: (row[column] or "").strip() for column in REQUIRED_COLUMNS}
            label = label_fn(fields[task])
            if label is None:
                unknown[fields[task]] += 1
                continue
            name = f"{fields['face_id']}.{fields['original_image']}"
            records.append(FaceRecord(
                fold=fold, user_id=fields["user_id"],
                image_id=f"{fields['user_id']}/{name}",
                path=folder / fields["user_id"] / f"{prefix}.{name}",
                label=label, key=f"{fold}/{line_no}"))
    if unknown:
        skipped[f"unknown_{task}"] += sum(unknown.values())
        _LOG.warning("Adience: skipping %d rows with no %s label: %s", sum(unknown.values()),
                     task, dict(sorted(unknown.items())))
    return records


@dataclasses.dataclass(eq=False)
class AdienceConfig(FoldConfig):
    """Task ('age' or 'gender') and test fold (0..4); `name` becomes `<task>_fold<k>`."""

    task: str = "age"

    def check(self) -> None:
        if self.task not in TASKS:
            raise BadFileError(f"task={self.task!r}: must be one of {TASKS}.")

    def default_name(self) -> str:
        return f"{self.task}_fold{self.test_fold}"

    def default_description(self) -> str:
        return (f"{self.task} classification; test = fold {self.test_fold}, train = the other "
                "four folds.")


class Adience(ManualDownloadBuilder, dataset="Adience",
              instructions=MANUAL_DOWNLOAD_INSTRUCTIONS):
    """Adience faces with age-group or gender labels over the 5 subject-exclusive folds."""

    name = "adience"
    BUILDER_CONFIGS = [AdienceConfig(task=task, test_fold=k) for task in TASKS
                       for k in range(NUM_FOLDS)]
    DEFAULT_BUILDER_CONFIG_NAME = "age_fold0"

    def _info(self) -> tfds.core.DatasetInfo:
        names = AGE_NAMES if self.builder_config.task == "age" else GENDER_NAMES
        return self.manual_info(
            "Adience: unfiltered Flickr face photos labelled with age group and gender, in 5 "
            "subject-exclusive folds. " + self.builder_config.description,
            tfds.features.ClassLabel(names=list(names)),
            {"user_id": tfds.features.Text(doc="Flickr album (subject group) of the photo."),
             "fold": tfds.features.Scalar(dtype=np.int32, doc="Official fold, 0..4."),
             "image_id": tfds.features.Text(doc="<user_id>/<face_id>.<original_image>.")},
            HOMEPAGE, _CITATION)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager
                          ) -> dict[str, Iterator[tuple[str, dict]]]:
        root = find_manual_root(dl_manager, "fold_0_data.txt", "Adience",
                                MANUAL_DOWNLOAD_INSTRUCTIONS)
        self.info.metadata["skipped"] = {}
        skipped: collections.Counter = collections.Counter()
        records = read_folds(root, self.builder_config.task, skipped)
        record_skips(self.info, "Adience", "the fold files", skipped)
        test_fold = self.builder_config.test_fold
        return {
            "train": self._generate_examples("train", [r for r in records if r.fold != test_fold], _example),
            "test": self._generate_examples("test", [r for r in records if r.fold == test_fold], _example),
        }


def _example(record: FaceRecord) -> tuple[str, dict] | str:
    if not record.path.is_file():
        _LOG.warning("Skipping missing image %s (fold %d).", record.path, record.fold)
        return "missing_file"
    image = load_verified_image(record.path)
    if image is None:
        return "undecodable"
    # An RGB JPEG is stored as is; anything else (grey, CMYK, PNG) is re-encoded.
    encoded = record.path.read_bytes() if image.format == "JPEG" else encode_jpeg(image)
    return record.key, {"image": encoded, "label": record.label, "user_id": record.user_id, "fold": record.fold,
                        "image_id": record.image_id}


_CITATION = """\
@article{eidinger2014age,
  title={Age and Gender Estimation of Unfiltered Faces},
  author={Eidinger, Eran and Enbar, Roee and Hassner, Tal},
  journal={IEEE Transactions on Information Forensics and Security},
  volume={9},
  number={12},
  pages={2170--2178},
  year={2014}
}"""
