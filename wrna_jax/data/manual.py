"""What the TFDS builders that read a user's manual download share (UEC Food-100, Adience):
the builder skeleton (folds, info layout, the examples loop), locating the unpacked folder,
verifying images, and recording what was skipped."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import tensorflow_datasets as tfds
from etils import epath
from PIL import Image, ImageFile

from wrna_jax.data.tensorflow_cpu import tf  # noqa: F401  (TFDS below runs on the CPU)
from wrna_jax.errors import ConfigError, MissingFileError

JPEG_QUALITY = 95

_LOG = logging.getLogger(__name__)


def find_manual_root(dl_manager: tfds.download.DownloadManager, marker: str, dataset: str,
                     instructions: str) -> epath.Path:
    """The folder holding `marker`: the manual_dir itself or one of its direct subfolders.

    Raises FileNotFoundError naming the manual_dir and saying what to download when it is
    missing, empty or lacks `marker` (TFDS's own AssertionError does not say what to do).
    """
    manual_dir = getattr(dl_manager, "_manual_dir", None)  # Only for the message.
    try:
        root = epath.Path(dl_manager.manual_dir)
    except AssertionError:
        raise MissingFileError(
            f"{dataset}: the manual download directory {manual_dir} does not exist or is "
            f"empty.\n{instructions}") from None
    candidates = [root, *sorted(path for path in root.iterdir() if path.is_dir())]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    raise MissingFileError(
        f"{dataset}: no {marker} in the manual download directory {root} or in its direct "
        f"subfolders.\n{instructions}")


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Makes PIL raise on truncated files even if someone enabled LOAD_TRUNCATED_IMAGES."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_verified_image(path: epath.Path) -> Image.Image | None:
    """Fully decodes the image at `path` as RGB; None (with a warning) if corrupt or truncated.

    The image keeps its `format` (e.g. 'JPEG') only when it was RGB already; one that had to
    be converted has `format` None, so callers know the file's bytes are not plain RGB.
    """
    try:
        with _strict_truncation(), path.open("rb") as file:
            image = Image.open(file)
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        _LOG.warning("Skipping undecodable or truncated image %s: %s: %s", path,
                     type(err).__name__, err)
        return None
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    """RGB `image` as JPEG bytes (quality `JPEG_QUALITY`)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def read_text(path: epath.Path) -> str:
    """The text of `path` as UTF-8, undecodable bytes replaced (never fails on encoding)."""
    return path.read_bytes().decode("utf-8", errors="replace")


def record_skips(info: tfds.core.DatasetInfo, dataset: str, what: str,
                 skipped: Mapping[str, int]) -> None:
    """Adds `skipped` (reason -> count) to `info.metadata['skipped']` and logs a warning."""
    skipped = {reason: count for reason, count in skipped.items() if count}
    total = info.metadata.setdefault("skipped", {})
    for reason, count in skipped.items():
        total[reason] = total.get(reason, 0) + count
    if skipped:
        _LOG.warning("%s: skipped %d examples of %s (%s).", dataset, sum(skipped.values()), what,
                     ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items())))


@dataclasses.dataclass(eq=False)
class FoldConfig(tfds.core.BuilderConfig):
    """A cross-validation fold (0..num_folds - 1) as the test split; subclasses name themselves."""

    name: str = ""
    test_fold: int = 0
    num_folds: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.test_fold < self.num_folds:
            raise ConfigError(f"test_fold={self.test_fold}: must be in 0..{self.num_folds - 1}.")
        self.check()
        self.name = self.name or self.default_name()
        if self.description is None:
            self.description = self.default_description()

    def check(self) -> None:
        """Validates the subclass's own fields (nothing here)."""

    def default_name(self) -> str:
        """The config name used when `name` is left empty."""
        return f"fold{self.test_fold}"

    def default_description(self) -> str:
        """The description used when none is given."""
        return (f"test = fold {self.test_fold}, train = the other {self.num_folds - 1} folds.")


class ManualDownloadBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The skeleton of a builder over a manual download: an RGB JPEG `image`, a `label`, the
    builder's own features, skipped files counted in `info.metadata['skipped']`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    DATASET = ""  # the dataset's name in messages

    def __init_subclass__(cls, *, dataset: str = "", instructions: str = "", **kwargs: Any) -> None:
        """`class X(ManualDownloadBuilder, dataset="X", instructions=...)`: the name in messages
        and what to download. Sets `code_path` to the subclass's file: TFDS 4.9.10 derives it
        via `importlib_resources`, which it only requires on Python < 3.9
        (tensorflow/datasets#11212), so `download_and_prepare` would die with
        ModuleNotFoundError."""
        cls.DATASET = dataset or cls.DATASET
        cls.MANUAL_DOWNLOAD_INSTRUCTIONS = instructions or cls.MANUAL_DOWNLOAD_INSTRUCTIONS
        cls.code_path = epath.Path(sys.modules[cls.__module__].__file__)
        super().__init_subclass__(**kwargs)

    def manual_info(self, description: str, label: tfds.features.ClassLabel, features: Mapping[str, Any],
                    homepage: str, citation: str) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=description,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": label, **features}),
            supervised_keys=("image", "label"), homepage=homepage, citation=citation,
            metadata=tfds.core.MetadataDict())

    def _generate_examples(self, split: str, records: Iterable[Any], example: Callable[[Any], tuple[str, dict] | str]
                 ) -> Iterator[tuple[str, dict]]:
        """(key, features) of each record for which `example(record)` gives them; a string it
        returns instead is the reason the record is skipped (counted, with a warning)."""
        skipped: collections.Counter = collections.Counter()
        for record in records:
            made = example(record)
            if isinstance(made, str):
                skipped[made] += 1
                continue
            yield made
        record_skips(self.info, self.DATASET, f"split {split!r}", skipped)
