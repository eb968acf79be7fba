"""The device feed (wrna_jax/feeds.py, data/device_preprocessing.py, data/arrays.py): its crops are
the host pipeline's crops for the same offsets and flips, its random offsets have the host's
distribution, and train.py / eval.py / predict.py run on it with TensorFlow blocked (training,
a bit-identical resume, evaluation and prediction on the synthetic dataset)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from wrna_jax.data import arrays, device_preprocessing, preprocessing
from wrna_jax.data.tensorflow_cpu import tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S, SIZE, LONG = 40, 24, 60  # resized shorter side, crop side, longest stored side
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# float32 (x * scale + offset): one rounding each, or one fused rounding; |values| < 3.
TOLERANCE = 4 * 3 * np.finfo(np.float32).eps


def _resized_images():
    """Decoded-and-resized uint8 images: landscape, portrait, and one wider than the layout keeps."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((S, 53, 3), (47, S, 3), (S, 75, 3))]


def _layout(images):
    return arrays.stack(((image, 0) for image in images), (S, LONG, 3), len(images), long=LONG, image_size=SIZE)


def _host(image, window, flip=False):
    crop = preprocessing.crop(tf.constant(image), tf.constant(window, tf.int32))
    crop = tf.image.flip_left_right(crop) if flip else crop
    return preprocessing.normalise(crop, MEAN, STD).numpy()


def test_device_crops_are_the_host_crops_for_the_same_offsets_and_flips():
    images = _resized_images()
    held = _layout(images)
    assert held.transposed.tolist() == [False, True, False] and held.sizes.tolist() == [[S, 53], [S, 47], [S, LONG]]
    shapes = np.array([image.shape[:2] for image in images[:2]])
    offsets = np.array([[7, 20], [15, 3]])  # (y, x) in each image as it was
    for flip in (False, True):
        device = device_preprocessing.normalise(device_preprocessing.crop(
            jnp.asarray(held.images[:2]), jnp.asarray(held.transposed[:2]), jnp.asarray(offsets),
            jnp.full(2, flip), SIZE), MEAN, STD)
        for n in range(2):
            host = _host(images[n], [*offsets[n], SIZE, SIZE], flip)
            np.testing.assert_allclose(np.asarray(device[n]), host, rtol=0, atol=TOLERANCE)
    # Evaluation: the host's decoded-cache centre crop and ten crops (the wide image: its centre crop).
    settings = dict(image_size=SIZE, mean=MEAN, std=STD)
    centre = device_preprocessing.fine_grained(jnp.asarray(held.images), jnp.asarray(held.sizes),
                                               jnp.asarray(held.transposed), None, ten_crops=False, **settings)
    ten = device_preprocessing.fine_grained(jnp.asarray(held.images[:2]), jnp.asarray(held.sizes[:2]),
                                            jnp.asarray(held.transposed[:2]), None, ten_crops=True, **settings)
    for n, image in enumerate(images):
        example = {"image": tf.constant(image), "label": tf.constant(0)}
        host = preprocessing.FineGrainedPreprocess(train=False, image_size=SIZE, resize_size=S, decoded_cache=True)
        np.testing.assert_allclose(np.asarray(centre[n]), host(example)["image"].numpy(), rtol=0, atol=TOLERANCE)
        if n < 2:
            host_ten = preprocessing.FineGrainedPreprocess(train=False, image_size=SIZE, resize_size=S,
                                                           decoded_cache=True, ten_crop=True)
            np.testing.assert_allclose(np.asarray(ten[n]), host_ten(example)["image"].numpy(), rtol=0, atol=TOLERANCE)
    assert shapes.tolist() == [[S, 53], [47, S]]


def test_device_offsets_and_flips_have_the_host_distribution():
    """Both feeds draw offsets uniform over [0, H - s] x [0, W - s] and flips with probability
    1/2 (different generators): each marginal against uniform, and host against device."""
    h, w, n = S, 53, 3000
    coordinates = np.stack([*np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), np.zeros((h, w), int)], -1)
    image = coordinates.astype(np.uint8)
    host = preprocessing.FineGrainedPreprocess(train=True, image_size=SIZE, resize_size=S, decoded_cache=True)
    seeds = tf.random.experimental.stateless_split(tf.constant([0, 1], tf.int64), n)
    crops = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda seed: host._from_resized({"image": tf.constant(image), "rng": seed})).batch(n).get_single_element()
    crops = crops.numpy().astype(int)
    host_y, host_x = crops[:, 0, 0, 0], crops[..., 1].min(axis=(1, 2))
    host_flip = crops[:, 0, 0, 1] > crops[:, 0, -1, 1]
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    offsets, flips = device_preprocessing.random_offsets(keys, jnp.tile(jnp.array([h, w]), (n, 1)), SIZE)
    device_y, device_x, device_flip = np.asarray(offsets[:, 0]), np.asarray(offsets[:, 1]), np.asarray(flips)
    for values, top in ((host_y, h - SIZE), (host_x, w - SIZE), (device_y, h - SIZE), (device_x, w - SIZE)):
        assert values.min() >= 0 and values.max() <= top
        counts = np.bincount(values, minlength=top + 1)
        assert stats.chisquare(counts).pvalue > 1e-4, counts
    for a, b in ((host_y, device_y), (host_x, device_x)):
        table = np.stack([np.bincount(a, minlength=w), np.bincount(b, minlength=w)])
        assert stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue > 1e-4
    for flip in (host_flip, device_flip):
        assert stats.binomtest(int(flip.sum()), n).pvalue > 1e-4


NO_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None
sys.modules["tensorflow_datasets"] = None
import json, os
import numpy as np
from wrna_jax import checkpoint, cli
import train, eval as eval_script, predict as predict_script

out, flags = sys.argv[1], sys.argv[2:]
def run(script, workdir, *extra):
    return cli.invoke(script.main, [script.__name__ + ".py", f"--workdir={out}/{workdir}", *flags, *extra],
                      positional=script is predict_script)
assert run(train, "whole", "--config.num_epochs=2") == 0
assert run(train, "halves", "--config.num_epochs=1") == 0
assert run(train, "halves", "--config.num_epochs=2") == 0
assert run(eval_script, "halves", "--checkpoint=latest") == 0
from PIL import Image
Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(f"{out}/photo.png")
assert run(predict_script, "halves", "--checkpoint=latest", "--json", f"{out}/photo.png") == 0
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets", "clu")
                                    and sys.modules[m] is not None)}))
"""


def test_train_resume_eval_and_predict_on_the_device_feed_without_tensorflow(tmp_path):
    flags = ["--config=configs/synthetic.py", "--config.dataset.synthetic.num_train=24",
             "--config.dataset.synthetic.num_test=10", "--config.dataset.validation.protocol=authors",
             "--config.dataset.images.image_size=32", "--config.dataset.images.resize_size=36",
             "--config.model.backbone=cifar_wrn", "--config.model.depth=10", "--config.model.width=1",
             "--config.model.dtype=float32", "--config.attention.depth=2",
             "--config.model.bn_group_size=4", "--config.batch_size=8", "--config.eval_batch_size=8", "--config.log_every_steps=1",
             "--config.evals.attention_masks.examples=2"]
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(tmp_path), *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"modules": []}
    assert "device feed:" in done.stdout
    from tests.conftest import tensorboard_entries

    from wrna_jax import checkpoint

    whole, halves = (checkpoint.Checkpoints(str(tmp_path / name), read_only=True) for name in ("whole", "halves"))
    assert whole.all_steps()[-1] == halves.all_steps()[-1] == 6  # 3 steps an epoch
    assert "Resumed from step 3" in done.stdout + done.stderr
    import orbax.checkpoint as ocp

    a, b = (ocp.PyTreeCheckpointer().restore(str(tmp_path / name / "checkpoints" / "6" / "state"))
            for name in ("whole", "halves"))
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):  # bit-identical
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    logged = [json.loads(line)["step"] for line in open(tmp_path / "halves" / "metrics.jsonl")]
    assert sorted(set(logged)) == list(range(1, 7))
    assert sorted({step for step, _ in tensorboard_entries(str(tmp_path / "halves"))}) == list(range(1, 7))
    results = json.load(open(tmp_path / "halves" / "eval_latest" / "eval_results.json"))
    assert results["num_examples"] == 10 and results["split"] == "test"
    assert os.path.exists(tmp_path / "halves" / "predictions" / "predictions.json")


def test_the_feed_is_chosen_by_memory_and_a_resumed_run_keeps_its_own(data_dir):
    from conftest import tiny_train_config

    from wrna_jax import feeds, parallel
    from wrna_jax.errors import ConfigError

    config = tiny_train_config(data_dir)
    mesh = parallel.create_mesh(1)
    said = []
    feed = feeds.create_feed(config, mesh, ("train_split", "eval_split"), announce=said.append)
    assert feed.kind == "device" and feed.num_examples("train") == 512 and feed.input_shape == (40, 40, 1)
    assert said == [f"device feed: {feeds.describe_bytes(feed.split_bytes('train') + feed.split_bytes('validation'))} "
                    f"resident per device (train, validation), "
                    f"{100 * 608 * (40 * 40 + 13) / feeds.device_memory(mesh):.1f}% of its "
                    f"{feeds.describe_bytes(feeds.device_memory(mesh))} (at most 50%: config.input.memory_fraction)"]
    config.input.memory_fraction = 1e-9  # nothing fits
    said.clear()
    assert feeds.create_feed(config, mesh, ("train_split",), announce=said.append).kind == "host"
    assert said[0].endswith("does not fit, using the host feed.")
    config.input.feed = "device"
    with pytest.raises(ConfigError, match=r"^device feed: .* it does not fit; use --config.input.feed=host, or "
                                          r"raise config.input.memory_fraction\.$"):
        feeds.create_feed(config, mesh, ("train_split",), announce=said.append)
    with pytest.raises(ConfigError, match=r"config.input.feed='device', but the run in this workdir was fed by the "
                                          r"'host' feed"):
        feeds.choose(config, saved="host")
    config.input.feed = "auto"
    assert feeds.choose(config, saved="host") == "host"
    with pytest.raises(ConfigError, match=r"--split='nonsense': the dataset has splits \['test', 'train', 'validation'\]"):
        feeds.create_feed(config, mesh, ("nonsense",), kind="device")


def test_both_feeds_read_the_same_training_examples_in_the_same_order(data_dir):
    """For one seed the host feed's and the device feed's training batches hold the same
    examples in the same order (cluttered MNIST: no random augmentation and the same canvases,
    so the images are equal bit for bit); with two processes, the host feed's step-k rows of
    process 0 then 1 are the global batch that `order.GlobalStream` gives the device feed."""
    from conftest import tiny_train_config

    from wrna_jax import feeds, parallel
    from wrna_jax.data import order

    config = tiny_train_config(data_dir)
    config.seed = 3
    mesh = parallel.create_mesh(1)
    device = feeds.create_feed(config, mesh, ("train_split",), kind="device", announce=lambda line: None)
    host = feeds.create_feed(config, mesh, ("train_split",), kind="host", announce=lambda line: None)
    assert (device.kind, host.kind) == ("device", "host")
    steps = 10  # 64 x 10 crosses the end of the first epoch of 512
    device_batches = device.train_batches(config, mesh, start_step=6)
    host_batches = host.train_batches(config, mesh, start_step=6)
    for _ in range(steps - 6):
        d, h = jax.device_get(next(device_batches)), jax.device_get(next(host_batches))
        np.testing.assert_array_equal(d["label"], h["label"])
        np.testing.assert_array_equal(d["image"], h["image"])
    # Two processes of 32 rows each.
    split = device.host_arrays("train")
    glob = order.GlobalStream(config.seed, 512, np.repeat([0, 1], 32))
    shares = [host.data.train_batches(32, seed=config.seed, start_step=7, process_index=p, process_count=2)
              for p in (0, 1)]
    for step in (7, 8):
        rows = [next(share) for share in shares]
        indices = glob.indices(step)
        np.testing.assert_array_equal(np.concatenate([r["label"] for r in rows]), split.labels[indices])
        np.testing.assert_array_equal(np.concatenate([r["image"] for r in rows]),
                                      split.images[indices].astype(np.float32) / np.float32(255))
