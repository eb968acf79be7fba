"""Fine-grained and CIFAR input pipelines under `tfds.testing.mock_data`, and the dataset registry.

The TFDS datasets cannot be downloaded here, so every builder is mocked: its metadata (split
sizes) is written to a temporary data_dir and `as_dataset` serves examples made in the test,
encoded and decoded through the builder's real features. That lets the tests choose the
images: JPEG and PNG, known patterns, coloured bounding-box regions.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import requests
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from configs import default
from wrna_jax.data import catalogue, order, pipeline, prepare, preprocessing
from wrna_jax.data.input import create_input
from wrna_jax.data.registry import DATASETS, dataset_spec

TFDS_DATASETS = ("stanford_dogs", "caltech_birds2011", "cars196", "food101", "cifar10",
                 "cifar100")
BBOX_DATASETS = ("stanford_dogs", "caltech_birds2011", "cars196")
NUM_EXAMPLES = 8  # Per split.

# An example maker: index -> (encoded image bytes or uint8 array, [N, 4] normalised boxes).
MakeExample = Callable[[int], tuple[object, np.ndarray]]


def encode(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def pattern(height: int, width: int) -> np.ndarray:
    """A smooth but position-revealing uint8 RGB image."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [128 + 90 * np.sin(x / (7.0 + 3 * c) + c) * np.cos(y / (9.0 + 2 * c)) + 0.1 * x
                for c in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def random_example(index: int, fixed_size: int | None = None) -> tuple[object, np.ndarray]:
    """Random sizes and orientations (or `fixed_size` squares), alternately JPEG and PNG, one
    or two boxes."""
    rng = np.random.default_rng(index)
    height, width = rng.integers(30, 90, size=2) if fixed_size is None else (fixed_size,) * 2
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    boxes = np.sort(rng.uniform(size=(1 + index % 2, 2, 2)), axis=1).transpose(0, 2, 1)
    boxes = boxes.reshape(-1, 4)[:, [0, 2, 1, 3]]  # -> [ymin, xmin, ymax, xmax]
    return encode(image, "JPEG" if index % 2 else "PNG"), boxes.astype(np.float32)


def fake_value(feature: tfds.features.FeatureConnector, index: int, image: object,
               boxes: np.ndarray) -> object:
    """A value of `feature` for the example: `image` for the image, `boxes` for boxes."""
    if isinstance(feature, tfds.features.FeaturesDict):
        return {key: fake_value(sub, index, image, boxes) for key, sub in feature.items()}
    if isinstance(feature, tfds.features.Sequence):  # Stanford Dogs' objects: one per box.
        return {key: [tfds.features.BBox(*box) for box in boxes] for key in feature.feature}
    if isinstance(feature, tfds.features.BBoxFeature):
        return tfds.features.BBox(*boxes[0])
    if isinstance(feature, tfds.features.ClassLabel):
        return index % feature.num_classes
    if isinstance(feature, tfds.features.Image):
        return image if feature.shape[-1] == 3 else np.zeros((4, 4, 1), np.uint8)
    if isinstance(feature, tfds.features.Text):
        return f"example {index}"
    raise NotImplementedError(f"No fake value for {feature!r}.")


def mock_as_dataset(make_example: MakeExample):
    """A `FileReaderBuilder._as_dataset` serving `make_example(0 .. NUM_EXAMPLES - 1)`,
    encoded with the builder's features and decoded with the caller's decoders."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del split, read_config, kwargs
        features = self.info.features
        if isinstance(decoders, tfds.decode.PartialDecoding):
            features = decoders.extract_features(features)
            decoders = decoders.decoders
        encoded = [features.encode_example(fake_value(features, index, *make_example(index)))
                   for index in range(NUM_EXAMPLES)]
        signature = tf.nest.map_structure(lambda info: tf.TensorSpec(info.shape, info.dtype),
                                          features.get_serialized_info())
        ds = tf.data.Dataset.from_generator(lambda: iter(encoded), output_signature=signature)
        ds = ds.apply(tf.data.experimental.assert_cardinality(NUM_EXAMPLES))
        return ds.map(lambda example: features.decode_example(example, decoders=decoders))

    return as_dataset


@contextlib.contextmanager
def mocked(tmp_path, name: str, make_example: MakeExample | None = None) -> Iterator[None]:
    """TFDS dataset `name` prepared (metadata only) in a fresh data_dir, serving `make_example`
    (default: `random_example` of the dataset's fixed image size, if any)."""
    data_dir = tmp_path / f"tfds_{name}"
    builder = tfds.builder(name, data_dir=str(data_dir))
    if make_example is None:
        fixed_size = builder.info.features["image"].shape[0]
        make_example = lambda index: random_example(index, fixed_size)  # noqa: E731
    spec = dataset_spec(name)
    splits = {spec.train_split, spec.eval_split, spec.test_split}  # The real split names.
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[NUM_EXAMPLES], num_bytes=0)
        for split in sorted(splits)]))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, data_dir=str(data_dir),
                                as_dataset_fn=mock_as_dataset(make_example)):
        yield


IMAGE_FIELDS = ("image_size", "resize_size", "crop_to_bbox", "ten_crop", "antialias", "decoded_cache")


def dataset_config(name: str, **fields):
    """`config.dataset` of `name` as the configs build it (configs/fine_grained.py's image
    settings for the fine-grained family); `fields` override them."""
    images = {key: fields.pop(key) for key in IMAGE_FIELDS if key in fields}
    sections = {}
    if dataset_spec(name).family == "fine_grained":
        sections["images"] = {**dict(image_size=224, resize_size=256, crop_to_bbox=False, ten_crop=False,
                                     antialias=False), **images}
    return default.dataset(name, **sections, **fields)


def batches(dataset, *, train: bool, take: int, batch_size: int = 4, seed: int = 0,
            **kwargs) -> list[dict[str, np.ndarray]]:
    data = create_input(dataset)
    split = data.split("train_split" if train else "eval_split")
    preprocess = preprocessing.preprocessing(data.spec.family).make(data.spec, dataset, train, None)
    ds = pipeline.create_split(data.builder, split, batch_size, train=train, seed=seed, preprocess_fn=preprocess,
                               **kwargs)
    return list(pipeline.as_numpy_batches(ds.take(take)))


def normalised_range(name: str) -> tuple[np.ndarray, np.ndarray]:
    entry = DATASETS[name]
    mean, std = np.array(entry.mean), np.array(entry.std)
    return (0 - mean) / std, (1 - mean) / std


def assert_same_batches(first, second) -> None:
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


# ---------------------------------------------------------------- every TFDS dataset


@pytest.mark.parametrize("name", TFDS_DATASETS)
def test_batches_shapes_dtypes_range_determinism_and_resume(tmp_path, name):
    entry = DATASETS[name]
    side = 32 if entry.family == "cifar" else 224
    low, high = normalised_range(name)
    dataset = dataset_config(name, **({"crop_to_bbox": True} if name in BBOX_DATASETS else {}))
    with mocked(tmp_path, name):
        assert create_input(dataset).input_shape == (side, side, 3)
        # 5 batches of 4 from 8 examples: crosses two epoch ends.
        stream = batches(dataset, train=True, take=5)
        resumed = batches(dataset, train=True, take=2, start_step=3)
        seed0 = batches(dataset, train=True, take=4)  # two epochs
        seed1 = batches(dataset, train=True, take=4, seed=1)
        evaluation = batches(dataset, train=False, take=3, pad_last_batch=True)

    for batch in stream + evaluation:
        assert batch["image"].shape == (4, side, side, 3) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
        assert ((0 <= batch["label"]) & (batch["label"] < entry.num_classes)).all()
        assert batch["mask"].dtype == bool
        assert (batch["image"] >= low - 1e-5).all() and (batch["image"] <= high + 1e-5).all()
    assert len(evaluation) == 2 and all(batch["mask"].all() for batch in evaluation)
    assert_same_batches(stream[3:], resumed)
    # The mock's label is the example's index: the order is data/order.py's, which the seed draws.
    epochs = {}
    for seed, got in ((0, seed0), (1, seed1)):
        stream = order.Stream(seed, 4, NUM_EXAMPLES)
        for step, batch in enumerate(got):
            np.testing.assert_array_equal(batch["label"], stream.indices(step) % entry.num_classes)
        for epoch in (0, 1):  # each epoch's 8 augmented examples, by example
            images = np.concatenate([b["image"] for b in got[2 * epoch:2 * epoch + 2]])
            labels = np.concatenate([b["label"] for b in got[2 * epoch:2 * epoch + 2]])
            assert sorted(labels) == list(range(NUM_EXAMPLES))
            epochs[seed, epoch] = images[np.argsort(labels)]
    assert not np.array_equal(seed0[0]["label"], seed1[0]["label"])
    # The same examples are augmented anew each epoch and differently under another seed.
    assert not np.array_equal(epochs[0, 0], epochs[0, 1])
    assert not np.array_equal(epochs[0, 0], epochs[1, 0])


def test_same_seed_gives_the_same_augmented_batches(tmp_path):
    dataset = dataset_config("caltech_birds2011", crop_to_bbox=True)
    with mocked(tmp_path, "caltech_birds2011"):
        first = batches(dataset, train=True, take=3)
        again = batches(dataset, train=True, take=3)
    assert_same_batches(first, again)


# ---------------------------------------------------------------- preprocessing, known images


def numpy_resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (the TF2 / PyTorch align_corners=False rule)."""
    def taps(out_size: int, in_size: int):
        centre = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        centre = np.clip(centre, 0, in_size - 1)
        low = np.floor(centre).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, centre - low

    y0, y1, wy = taps(height, image.shape[0])
    x0, x1, wx = taps(width, image.shape[1])
    image = image.astype(np.float64)
    rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def reference_eval(image: np.ndarray, resize: int = 256, size: int = 224) -> np.ndarray:
    """Resize the shorter side to `resize` (longer: floor), return the resized image."""
    height, width = image.shape[:2]
    if height <= width:
        new = (resize, resize * width // height)
    else:
        new = (resize * height // width, resize)
    return numpy_resize_bilinear(image, *new)


def normalise(image: np.ndarray) -> np.ndarray:
    mean, std = np.array(preprocessing.IMAGENET_MEAN), np.array(preprocessing.IMAGENET_STD)
    return (image / 255.0 - mean) / std


def one_image(image: np.ndarray, fmt: str = "PNG", boxes=((0.0, 0.0, 1.0, 1.0),)
              ) -> MakeExample:
    encoded = encode(image, fmt)
    return lambda index: (encoded, np.array(boxes, np.float32))


@pytest.mark.parametrize("height,width", [(150, 200), (413, 300)])  # Up- and downscaling.
def test_eval_centre_crop_matches_a_numpy_reference(tmp_path, height, width):
    image = pattern(height, width)
    with mocked(tmp_path, "food101", one_image(image)):
        centre = batches(dataset_config("food101"), train=False, take=1)[0]["image"][0]
        ten = batches(dataset_config("food101", ten_crop=True), train=False, take=1)[0]
    resized = reference_eval(image)
    top = int(round((resized.shape[0] - 224) / 2))
    left = int(round((resized.shape[1] - 224) / 2))
    expected = normalise(resized[top:top + 224, left:left + 224])
    np.testing.assert_allclose(centre, expected, atol=2e-4)
    shifted = normalise(resized[top + 1:top + 225, left:left + 224])
    assert np.abs(centre - shifted).max() > 0.1  # The comparison can tell a one-pixel shift.

    # Ten-crop: (B, 10, 224, 224, 3); 0-3 corners, 4 centre, 5 + i = flip of crop i.
    crops = ten["image"][0]
    assert ten["image"].shape == (4, 10, 224, 224, 3) and ten["label"].shape == (4,)
    np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])
    np.testing.assert_array_equal(crops[4], centre)
    far_y, far_x = resized.shape[0] - 224, resized.shape[1] - 224
    for crop, (y, x) in zip(crops[:4], [(0, 0), (0, far_x), (far_y, 0), (far_y, far_x)]):
        np.testing.assert_allclose(crop, normalise(resized[y:y + 224, x:x + 224]), atol=2e-4)


def test_fused_jpeg_crop_matches_decoding_first():
    """The decode_and_crop_jpeg path crops the same window as decoding then cropping, and PNG
    (no fused decoding) gives exactly the decoded-array result."""
    image = pattern(240, 320)
    jpeg, png = encode(image, "JPEG"), encode(image, "PNG")
    decoded_jpeg = tf.io.decode_jpeg(jpeg, channels=3)
    preprocess = preprocessing.FineGrainedPreprocess(train=True)
    for index in range(6):
        rng = tf.constant([7, index], tf.int64)
        fused = preprocess({"image": tf.constant(jpeg), "label": 0, "rng": rng})["image"]
        first = preprocess({"image": decoded_jpeg, "label": 0, "rng": rng})["image"]
        np.testing.assert_allclose(fused, first, atol=0.15)  # JPEG chroma upsampling at edges.
        assert np.abs(fused.numpy() - first.numpy()).mean() < 0.01
        from_png = preprocess({"image": tf.constant(png), "label": 0, "rng": rng})["image"]
        exact = preprocess({"image": tf.constant(image), "label": 0, "rng": rng})["image"]
        np.testing.assert_array_equal(from_png, exact)


def test_training_crops_and_flips_vary_and_cover_the_resized_scale():
    """A horizontal ramp: flips reverse its slope (about half the time) and the crop spans
    224/256 of the shorter side, so the ramp's range in the crop is fixed; offsets vary."""
    height, width = 300, 400
    ramp = np.broadcast_to(np.linspace(0, 255, width)[None, :, None], (height, width, 3))
    image = tf.constant(np.round(ramp).astype(np.uint8))
    preprocess = preprocessing.FineGrainedPreprocess(train=True)
    flips, starts = [], []
    for index in range(24):
        out = preprocess({"image": image, "label": 0, "rng": tf.constant([0, index], tf.int64)})
        row = out["image"].numpy()[112, :, 0] * preprocessing.IMAGENET_STD[0] * 255 \
            + preprocessing.IMAGENET_MEAN[0] * 255  # Back to pixel values.
        flips.append(row[0] > row[-1])
        starts.append(min(row[0], row[-1]))
        window_pixels = 224 * height / 256  # The crop window side in the original.
        np.testing.assert_allclose(abs(row[-1] - row[0]),
                                   255 * (window_pixels - 1) / (width - 1), rtol=0.02)
    assert 4 <= sum(flips) <= 20
    assert len({round(s) for s in starts}) > 10


@pytest.mark.parametrize("name", BBOX_DATASETS)
def test_crop_to_bbox_keeps_the_box(tmp_path, name):
    """Red inside the box(es), blue elsewhere: cropped outputs are red, uncropped mostly blue."""
    height, width = 200, 300
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 2] = 255
    image[80:140, 180:270] = (255, 0, 0)
    box = np.array([80 / height, 180 / width, 140 / height, 270 / width])
    # Stanford Dogs: two overlapping boxes whose union is the red area.
    boxes = [box, box + [0.05, 0.05, 0, 0]] if name == "stanford_dogs" else [box]
    make_example = one_image(image, "JPEG", boxes)

    def red_fraction(images: np.ndarray) -> float:
        mean, std = np.array(preprocessing.IMAGENET_MEAN), np.array(preprocessing.IMAGENET_STD)
        pixels = (images * std + mean) * 255
        return float(np.mean((pixels[..., 0] > 200) & (pixels[..., 2] < 60)))

    with mocked(tmp_path, name, make_example):
        cropped = dataset_config(name, crop_to_bbox=True)
        train = batches(cropped, train=True, take=2)
        evaluation = batches(cropped, train=False, take=1)
        ten = batches({**cropped, "ten_crop": True}, train=False, take=1)
        whole = batches(dataset_config(name), train=False, take=1)
    for batch in train + evaluation + ten:
        assert red_fraction(batch["image"]) > 0.95
    assert red_fraction(whole[0]["image"]) < 0.25


def test_bbox_window_union_empty_and_degenerate_boxes():
    hw = tf.constant([100, 200])
    union = preprocessing.bbox_window(hw, tf.constant([[0.1, 0.1, 0.3, 0.2],
                                                       [0.2, 0.15, 0.5, 0.4]]))
    np.testing.assert_array_equal(union, [10, 20, 40, 60])
    np.testing.assert_array_equal(preprocessing.bbox_window(hw, tf.zeros([0, 4])),
                                  [0, 0, 100, 200])
    np.testing.assert_array_equal(preprocessing.bbox_window(hw, tf.constant([0.5, 0.5, 0.2, 1.2])),
                                  [50, 100, 1, 100])  # ymax < ymin: one row; xmax clipped.


def test_cifar_augmentation_crops_a_reflection_padded_image_and_keeps_the_shape():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect")  # the authors' np.pad
    windows = {(y, x, flip): np.asarray(padded[y:y + 32, x:x + 32][:, ::-1] if flip else padded[y:y + 32, x:x + 32])
               for y in range(9) for x in range(9) for flip in (False, True)}
    preprocess = preprocessing.CifarPreprocess(train=True, mean=catalogue.CIFAR_MEAN, std=catalogue.CIFAR_STD)
    normalise = lambda a: (a / 255.0 - np.array(catalogue.CIFAR_MEAN)) / np.array(catalogue.CIFAR_STD)
    seen = set()
    for index in range(16):
        out = preprocess({"image": tf.constant(image), "label": 3, "rng": tf.constant([1, index], tf.int64)})
        got = out["image"].numpy()
        assert got.shape == (32, 32, 3) and out["label"].dtype == tf.int32
        match = [key for key, window in windows.items() if np.allclose(got, normalise(window), atol=1e-5)]
        assert len(match) == 1, index  # exactly one crop (and flip) of the reflection-padded image
        seen.add(match[0])
    assert len(seen) > 8  # random offsets and flips
    white = tf.fill([32, 32, 3], tf.constant(255, tf.uint8))
    evaluation = preprocessing.CifarPreprocess(train=False, mean=catalogue.CIFAR_MEAN,
                                               std=catalogue.CIFAR_STD)({"image": white, "label": 3})
    expected = (1 - np.array(catalogue.CIFAR_MEAN)) / np.array(catalogue.CIFAR_STD)
    np.testing.assert_allclose(evaluation["image"], np.broadcast_to(expected, (32, 32, 3)),
                               rtol=1e-6)


def test_training_preprocessing_needs_the_pipeline_seed():
    with pytest.raises(KeyError, match="rng"):
        preprocessing.FineGrainedPreprocess(train=True)({"image": tf.zeros([8, 8, 3], tf.uint8),
                                                         "label": 0})


# ---------------------------------------------------------------- registry and configuration


def test_registry_config_errors_and_input_shapes(tmp_path):
    assert dataset_spec("cars196").num_classes == 196 and dataset_spec("food101").eval_split == "validation"
    fine_grained = preprocessing.preprocessing("fine_grained")
    assert fine_grained.shape(dataset_spec("cars196"), dataset_config("cars196", image_size=448), None) == (448, 448, 3)
    with pytest.raises(ValueError, match="Unknown dataset.name 'dogs'"):
        prepare.get_builder({"name": "dogs"})
    with pytest.raises(ValueError, match="no bounding boxes"):
        fine_grained.make(dataset_spec("food101"), dataset_config("food101", crop_to_bbox=True), True, None)
    cars = dataset_config("cars196", ten_crop=True)
    assert not fine_grained.make(dataset_spec("cars196"), cars, False, False).ten_crop  # validation: one crop
    assert fine_grained.make(dataset_spec("cars196"), cars, False, None).ten_crop
    assert not fine_grained.make(dataset_spec("cars196"), cars, True, None).ten_crop  # training: one crop
    with mocked(tmp_path, "stanford_dogs"):
        assert create_input(dataset_config("stanford_dogs")).input_shape == (224, 224, 3)
        with pytest.raises(ValueError, match=r"eval_split='validation'.*usual choice.*'test'"):
            create_input(dataset_config("stanford_dogs", eval_split="validation"))


# ---------------------------------------------------------------- missing data


@pytest.fixture
def offline(monkeypatch):
    """No network (every connection fails at once) and no download attempt allowed."""
    def refuse(address, *args, **kwargs):
        raise OSError(f"network is unreachable ({address[0]})")

    def no_download(self, *args, **kwargs):
        raise AssertionError("download_and_prepare must not run when the hosts are unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(variable, raising=False)


def test_missing_dataset_says_what_to_download_and_where(tmp_path, offline):
    data_dir = tmp_path / "empty"
    with pytest.raises(prepare.DatasetUnavailableError) as raised:
        prepare.get_builder(dataset_config("cars196", data_dir=str(data_dir)))
    message = str(raised.value)
    assert isinstance(raised.value, FileNotFoundError)
    for text in ("'cars196'", str(data_dir / "cars196" / "2.1.0"), "cannot reach ai.stanford.edu",
                 "download_and_prepare()", str(data_dir / "downloads" / "manual"),
                 "cars_train.tgz", "cars_test.tgz", "car_devkit.tgz",
                 "http://ai.stanford.edu/~jkrause/car196/cars_train.tgz"):
        assert text in message


def test_files_in_manual_dir_are_used_without_network(tmp_path, offline, monkeypatch):
    manual = tmp_path / "manual"
    manual.mkdir()
    for filename in ("images.tar", "annotation.tar", "lists.tar"):
        (manual / filename).write_bytes(b"")
    calls = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, download_config=None: calls.append(download_config))
    prepare.prepare_builder("stanford_dogs", str(tmp_path / "data"), str(manual))
    assert len(calls) == 1 and str(calls[0].manual_dir) == str(manual)


def test_download_failure_becomes_the_clear_error(tmp_path, monkeypatch):
    class Connection:
        def close(self) -> None:
            pass

    def fail(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("connection reset by peer")

    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: Connection())
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with pytest.raises(prepare.DatasetUnavailableError, match="connection reset by peer"):
        prepare.prepare_builder("cifar10", str(tmp_path / "data"))


def test_unreachable_host_probe_is_fast(monkeypatch):
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.delenv(variable, raising=False)
    unreachable = prepare._unreachable_hosts(["https://no-such-host.invalid/file.tgz"], 2.0)
    assert list(unreachable) == [("no-such-host.invalid", 443)]


def test_missing_manual_dataset_gives_its_instructions(tmp_path):
    with pytest.raises(prepare.DatasetUnavailableError, match="UECFOOD100.zip"):
        prepare.get_builder(dataset_config("uec_food100", fold=0, data_dir=str(tmp_path),
                                           manual_dir=str(tmp_path / "manual")))


def test_decoded_cache_changes_nothing_but_where_the_decoding_happens(tmp_path):
    """decoded_cache: training batches over three epochs are those of the same preprocessing
    without any cache (memory or files); evaluation pixels are the fused path's up to the one
    rounding of the resized image to uint8 (0.5 / 255 before normalisation)."""
    dataset = dataset_config("stanford_dogs", crop_to_bbox=True, image_size=48, resize_size=56, decoded_cache=True)
    files = dataset_config("stanford_dogs", crop_to_bbox=True, image_size=48, resize_size=56, decoded_cache=True,
                           cache_dir=str(tmp_path / "decoded"))
    fused = dataset_config("stanford_dogs", crop_to_bbox=True, image_size=48, resize_size=56)
    with mocked(tmp_path, "stanford_dogs"):
        cached = batches(dataset, train=True, take=6)   # 8 examples: three epochs, two read from the cache
        uncached = batches(dataset, train=True, take=6, cache=False)
        in_files = create_input(files).train_batches(4, seed=0)
        from_files = [next(in_files) for _ in range(6)]
        evaluation = batches(dataset, train=False, take=2)
        reference = batches(fused, train=False, take=2)
    assert_same_batches(cached, uncached)
    assert_same_batches(cached, from_files)
    assert any(name.startswith("stanford_dogs") for name in os.listdir(tmp_path / "decoded"))
    assert not np.array_equal(cached[0]["image"], cached[2]["image"])  # epochs still augment anew
    bound = 0.5 / (255 * min(DATASETS["stanford_dogs"].std)) + 1e-5  # + float32 rounding of the normalisation
    for a, b in zip(evaluation, reference, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
        assert np.max(np.abs(a["image"] - b["image"])) <= bound


def test_held_out_split_is_stratified_seeded_and_leaves_training_examples():
    from wrna_jax.data import holdout
    from wrna_jax.errors import ConfigError

    # Classes of 2, 5, 20 and 30 examples, interleaved: round(0.25 n), at least 1, at most n - 1.
    labels = np.array([0] * 2 + [1] * 5 + [2] * 20 + [3] * 30)[np.random.default_rng(0).permutation(57)]
    held = holdout.held_out_indices(labels, 0.25, seed=3)
    assert list(held) == sorted(set(held.tolist()))
    assert [int(np.sum(labels[held] == c)) for c in range(4)] == [1, 1, 5, 8]  # round(7.5) = 8
    np.testing.assert_array_equal(holdout.held_out_indices(labels, 0.25, seed=3), held)  # seeded
    assert not np.array_equal(holdout.held_out_indices(labels, 0.25, seed=4), held)
    assert [int(np.sum(labels[holdout.held_out_indices(labels, 0.99, seed=3)] == c)) for c in range(4)] == [1, 4, 19, 29]
    assert [int(np.sum(labels[holdout.held_out_indices(labels, 0.0, seed=3)] == c)) for c in range(4)] == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="class 5 has 1 training example"):
        holdout.held_out_indices(np.append(labels, 5), 0.25, seed=3)
    assert holdout.protocol({"validation": None}) is None and holdout.protocol({}) is None
    assert holdout.protocol({"validation": {"protocol": "authors"}}) == "authors"
