"""UEC Food-100 and Adience TFDS builders, prepared from tiny fake manual downloads.

The fakes follow the official layouts exactly (a few classes / users, small JPEGs) and each
holds one truncated JPEG, which preparation must skip, count and warn about.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from wrna_jax.data import adience, uec_food100
from wrna_jax.data import manual as manual_helpers


@contextlib.contextmanager
def captured_warnings(*loggers: str) -> Iterator[list[logging.LogRecord]]:
    """Collects WARNING records of `loggers` (caplog is per test; the builds are per module)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    for name in loggers:
        logging.getLogger(name).addHandler(handler)
    try:
        yield records
    finally:
        for name in loggers:
            logging.getLogger(name).removeHandler(handler)


def prepare(name: str, data_dir, manual_dir, config: str | None = None
            ) -> tfds.core.DatasetBuilder:
    builder = tfds.builder(name, data_dir=str(data_dir), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir) if manual_dir is not None else None,
        try_download_gcs=False))
    return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    full = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    return full[:len(full) // 2]


# ---------------------------------------------------------------- UEC Food-100


def gradient_photo(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth (JPEG-friendly) RGB photo whose pixels say where they are: R ~ x, G ~ y."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([x * 3, y * 3, np.full_like(x, 20 * seed)], -1).astype(np.uint8)


def ids_with_fold(predicate, count: int) -> list[str]:
    return [str(i) for i in range(1, 1000) if predicate(uec_food100.image_fold(str(i)))][:count]


@pytest.fixture(scope="module")
def uec(tmp_path_factory):
    """A fake UECFOOD100/ (100 class folders, photos in classes 1..3) and its builder."""
    manual = tmp_path_factory.mktemp("uec_manual")
    root = manual / "UECFOOD100"
    names = ["rice", "eels on rice", "chicken-'n'-egg on rice"] + [
        f"dish {k}" for k in range(4, 101)]
    root.mkdir()
    (root / "category.txt").write_text(
        "id\tname\n" + "".join(f"{k}\t{name}\n" for k, name in enumerate(names, start=1)))
    test_a, test_b = ids_with_fold(lambda fold: fold == 0, 2)
    train_a, train_b, train_c, bad = ids_with_fold(lambda fold: fold != 0, 4)
    sizes = {test_a: (64, 48), test_b: (50, 60), train_a: (40, 40), train_b: (70, 30),
             train_c: (32, 32)}
    photos = {image_id: gradient_photo(*size, seed=i)
              for i, (image_id, size) in enumerate(sizes.items())}
    # (class id, image id, box): test_a holds two dishes; one box overhangs the photo and one
    # lies outside it (empty after clipping); `bad` is a truncated JPEG.
    boxes = [(1, test_a, (5, 4, 37, 30)), (1, train_a, (0, 0, 40, 40)),
             (1, train_b, (60, 10, 90, 35)),
             (2, test_a, (30, 20, 64, 48)), (2, train_c, (2, 3, 20, 25)), (2, bad, (0, 0, 9, 9)),
             (3, test_b, (10, 10, 40, 50)), (3, train_c, (40, 40, 60, 60))]
    for class_id in range(1, 101):
        folder = root / str(class_id)
        folder.mkdir()
        lines = [f"{image_id} {x1} {y1} {x2} {y2}\n" for k, image_id, (x1, y1, x2, y2) in boxes
                 if k == class_id]
        (folder / "bb_info.txt").write_text("img x1 y1 x2 y2\n" + "".join(lines))
        for k, image_id, _ in boxes:
            if k == class_id:
                data = truncated_jpeg() if image_id == bad else jpeg_bytes(photos[image_id])
                (folder / f"{image_id}.jpg").write_bytes(data)
    with captured_warnings(uec_food100.__name__, manual_helpers.__name__) as warnings:
        builder = prepare("uec_food100", tmp_path_factory.mktemp("uec_data"), manual)
    return dict(builder=builder, boxes=boxes, names=names, bad=bad, warnings=warnings,
                sources={image_id: np.asarray(Image.open(io.BytesIO(jpeg_bytes(pixels))))
                         for image_id, pixels in photos.items()},
                splits={split: read_split(builder, split) for split in ("train", "test")})


def test_uec_image_fold_is_a_fixed_hash():
    # Regression values: changing the hash would silently reshuffle every user's splits.
    assert [uec_food100.image_fold(str(i)) for i in range(1, 13)] == [
        1, 3, 0, 4, 3, 0, 4, 0, 3, 3, 2, 3]
    counts = np.bincount([uec_food100.image_fold(str(i)) for i in range(20_000)], minlength=5)
    assert counts.min() > 3_800 and counts.max() < 4_200  # About 20% per fold.


def test_uec_split_sizes_labels_and_skips(uec):
    builder, boxes, bad = uec["builder"], uec["boxes"], uec["bad"]
    kept = [(k, image_id) for k, image_id, box in boxes
            if image_id != bad and box != (40, 40, 60, 60)]
    expected = {"test": sorted((k - 1, i) for k, i in kept if uec_food100.image_fold(i) == 0),
                "train": sorted((k - 1, i) for k, i in kept if uec_food100.image_fold(i) != 0)}
    assert (len(expected["test"]), len(expected["train"])) == (3, 3)
    for split, examples in uec["splits"].items():
        got = sorted((int(ex["label"]), ex["image_id"].decode()) for ex in examples)
        assert got == expected[split]
        assert builder.info.splits[split].num_examples == len(expected[split])
    skipped = {"undecodable": 1, "empty_box": 1}
    assert builder.info.features["label"].names == uec["names"]
    assert builder.info.metadata["skipped"] == skipped
    reloaded = tfds.builder("uec_food100", data_dir=builder.data_dir_root)  # From disk.
    assert reloaded.info.features["label"].names == uec["names"]
    assert reloaded.info.metadata["skipped"] == skipped
    messages = [record.getMessage() for record in uec["warnings"]]
    assert any(f"{bad}.jpg" in message and "truncated" in message for message in messages)
    assert any("skipped 2 examples" in message for message in messages)


def test_uec_photo_never_in_two_splits(uec):
    train_ids = {ex["image_id"] for ex in uec["splits"]["train"]}
    test_ids = {ex["image_id"] for ex in uec["splits"]["test"]}
    assert train_ids and test_ids and not train_ids & test_ids


def test_uec_crops_are_the_box_regions(uec):
    box_of = {(k - 1, image_id): box for k, image_id, box in uec["boxes"]}
    for example in uec["splits"]["train"] + uec["splits"]["test"]:
        image_id = example["image_id"].decode()
        source = uec["sources"][image_id]
        x1, y1, x2, y2 = box_of[(int(example["label"]), image_id)]
        expected = source[y1:y2, x1:x2]  # Slicing clips to the photo like the builder does.
        assert example["image"].shape == expected.shape
        # JPEG re-encoding moves pixels by a little; a box off by one pixel moves them by 3.
        assert np.abs(example["image"].astype(int) - expected).mean() < 1.5


def test_uec_missing_manual_dir_says_what_to_download(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        prepare("uec_food100", tmp_path / "data", missing)
    message = str(err.value)
    assert str(missing) in message and "UECFOOD100.zip" in message
    assert "http://foodcam.mobi/dataset100.html" in message


def test_uec_manual_dir_without_dataset_names_the_marker(tmp_path):
    manual = tmp_path / "manual"
    (manual / "something_else").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="category.txt") as err:
        prepare("uec_food100", tmp_path / "data", manual)
    assert str(manual) in str(err.value) and "UECFOOD100.zip" in str(err.value)


def test_uec_default_manual_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        prepare("uec_food100", tmp_path / "data", None)
    assert str(tmp_path / "data" / "downloads" / "manual") in str(err.value)


# ---------------------------------------------------------------- Adience

# (fold, user_id, face_id, original_image, age, gender, image kind); kind 'rgb', 'gray',
# 'truncated' or 'missing' (no file).
ADIENCE_ROWS = [
    (0, "30601258@N03", 1, "10399646885_67c7d20df9_o.jpg", "(25, 32)", "m", "rgb"),
    (0, "30601258@N03", 2, "10424815813_e94629b1ec_o.jpg", "(0, 2)", "f", "rgb"),
    (0, "30601258@N03", 3, "10437979845_5985be4b26_o.jpg", "(38, 42)", "u", "rgb"),
    (1, "10044155@N06", 8, "11589488596_2dcde7ee17_o.jpg", "(60, 100)", "f", "gray"),
    (1, "10044155@N06", 9, "11589545584_6a1eba6cc5_o.jpg", "None", "m", "rgb"),
    (1, "10044155@N06", 10, "11589589764_19abc5b69a_o.jpg", "35", "f", "rgb"),
    (2, "7153718@N04", 20, "11597935265_29bcdfa4a5_o.jpg", "(27, 32)", "", "rgb"),
    (2, "7153718@N04", 21, "11598838386_349a0d4849_o.jpg", "(8, 12)", "m", "rgb"),
    (2, "7153718@N04", 22, "11598166203_c70bb34c80_o.jpg", "(15, 20)", "f", "truncated"),
    (3, "113445054@N07", 30, "11763777465_11d01c34ce_o.jpg", "29", "m", "rgb"),
    (3, "113445054@N07", 31, "11791024315_56c1fa4b8b_o.jpg", "(48, 53)", "f", "rgb"),
    (4, "64504106@N06", 40, "11829290105_a0c8b4c8a9_o.jpg", "(38, 48)", "m", "rgb"),
    (4, "64504106@N06", 41, "11829401356_c30fcdcfd8_o.jpg", "(4, 6)", "f", "rgb"),
    (4, "64504106@N06", 42, "11830033866_bd0b36e6c5_o.jpg", "(4, 6)", "m", "missing"),
]
# Expected age index per row (None: skipped) and gender index.
ADIENCE_AGE = [4, 0, 5, 7, None, None, 4, 2, 3, 4, 6, None, 1, 1]
ADIENCE_GENDER = [1, 0, None, 0, 1, 0, None, 1, 0, 1, 0, 1, 0, 1]
HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
          "fiducial_yaw_angle\tfiducial_score\n")


def adience_image_id(row) -> str:
    return f"{row[1]}/{row[2]}.{row[3]}"


@pytest.fixture(scope="module")
def adience_manual(tmp_path_factory):
    """Fake fold_<k>_data.txt files and aligned/ faces (one truncated, one missing)."""
    manual = tmp_path_factory.mktemp("adience_manual")
    rng = np.random.default_rng(1)
    for fold in range(5):
        lines = [f"{user}\t{original}\t{face}\t{age}\t{gender}\t301\t105\t640\t641\t0\t94\t1\n"
                 for k, user, face, original, age, gender, _ in ADIENCE_ROWS if k == fold]
        (manual / f"fold_{fold}_data.txt").write_text(HEADER + "".join(lines))
    for _, user, face, original, _, _, kind in ADIENCE_ROWS:
        folder = manual / "aligned" / user
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"landmark_aligned_face.{face}.{original}"
        pixels = np.repeat(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), 6, 0).repeat(6, 1)
        if kind == "rgb":
            path.write_bytes(jpeg_bytes(pixels))
        elif kind == "gray":
            path.write_bytes(jpeg_bytes(pixels[..., 0]))
        elif kind == "truncated":
            path.write_bytes(truncated_jpeg())
    return manual


@pytest.fixture(scope="module")
def adience_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("adience_data")


@pytest.mark.parametrize("age, group", [
    ("(0, 2)", 0), ("(4, 6)", 1), ("(8, 12)", 2), ("(15, 20)", 3), ("(25, 32)", 4),
    ("(38, 43)", 5), ("(48, 53)", 6), ("(60, 100)", 7), ("(38, 42)", 5), ("(27, 32)", 4),
    ("2", 0), ("29", 4), ("42", 5), (" (8,12) ", 2), ("(38, 48)", None), ("(8, 23)", None),
    ("35", None), ("13", None), ("3", None), ("None", None), ("", None)])
def test_adience_age_group(age, group):
    assert adience.age_group(age) == group


@pytest.mark.parametrize("gender, label", [("f", 0), ("m", 1), (" M ", 1), ("u", None),
                                           ("", None)])
def test_adience_gender_label(gender, label):
    assert adience.gender_label(gender) == label


@pytest.mark.parametrize("task, test_fold", [("age", k) for k in range(5)] + [("gender", 0)])
def test_adience_folds_labels_and_skips(adience_manual, adience_data_dir, task, test_fold):
    labels = ADIENCE_AGE if task == "age" else ADIENCE_GENDER
    with captured_warnings(adience.__name__, manual_helpers.__name__) as warnings:
        builder = prepare("adience", adience_data_dir, adience_manual, f"{task}_fold{test_fold}")
    readable = [(row, label) for row, label in zip(ADIENCE_ROWS, labels)
                if label is not None and row[-1] not in ("truncated", "missing")]
    expected = {
        "test": sorted((adience_image_id(row), label, row[0]) for row, label in readable
                       if row[0] == test_fold),
        "train": sorted((adience_image_id(row), label, row[0]) for row, label in readable
                        if row[0] != test_fold)}
    for split in ("train", "test"):
        examples = read_split(builder, split)
        got = sorted((ex["image_id"].decode(), int(ex["label"]), int(ex["fold"]))
                     for ex in examples)
        assert got == expected[split]
        assert all(ex["user_id"].decode() == ex["image_id"].decode().split("/")[0]
                   for ex in examples)
        assert all(ex["image"].ndim == 3 and ex["image"].shape[-1] == 3 for ex in examples)
    names = list(adience.AGE_NAMES) if task == "age" else ["f", "m"]
    assert builder.info.features["label"].names == names
    unknown = sum(label is None for label in labels)
    skipped = {f"unknown_{task}": unknown, "missing_file": 1, "undecodable": 1}
    assert builder.info.metadata["skipped"] == skipped
    messages = [record.getMessage() for record in warnings]
    assert any("landmark_aligned_face.22." in message and "truncated" in message
               for message in messages)
    assert any(f"skipping {unknown} rows with no {task} label" in message
               for message in messages)


def test_adience_stores_the_original_jpeg(adience_manual, adience_data_dir):
    builder = prepare("adience", adience_data_dir, adience_manual, "age_fold2")
    (example,) = [ex for ex in read_split(builder, "test")
                  if ex["image_id"].decode() == adience_image_id(ADIENCE_ROWS[7])]
    _, user, face, original, *_ = ADIENCE_ROWS[7]
    data = (adience_manual / "aligned" / user / f"landmark_aligned_face.{face}.{original}"
            ).read_bytes()
    np.testing.assert_array_equal(example["image"], tf.io.decode_jpeg(data).numpy())


def test_adience_missing_manual_dir_says_what_to_download(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        prepare("adience", tmp_path / "data", missing, "gender_fold3")
    message = str(err.value)
    assert str(missing) in message
    assert "fold_0_data.txt" in message and "aligned.tar.gz" in message
    assert adience.HOMEPAGE in message


def test_adience_without_face_folder_names_it(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for fold in range(5):
        (manual / f"fold_{fold}_data.txt").write_text(HEADER)
    with pytest.raises(FileNotFoundError, match="aligned") as err:
        prepare("adience", tmp_path / "data", manual, "age_fold0")
    assert str(manual / "aligned") in str(err.value)


def test_adience_configs():
    names = [config.name for config in adience.Adience.BUILDER_CONFIGS]
    assert names == [f"{task}_fold{k}" for task in ("age", "gender") for k in range(5)]
    assert [c.name for c in uec_food100.UecFood100.BUILDER_CONFIGS] == [
        f"fold{k}" for k in range(5)]
