"""Training input-pipeline throughput on realistic JPEGs: tf.data (fused decode-and-crop,
decode-then-crop, and the decoded cache: epochs that only crop, flip and normalise cached uint8
images) with 1 and 2 threads, against a PIL baseline doing the same work, and the device feed
(the decoded images held as arrays, batches gathered, cropped, flipped and normalised by
compiled code: `wrna_jax/feeds.py`) run here on the CPU, where it competes for the same cores.

    python benchmarks/input_pipeline.py [--images 512] [--timed 2048] [--size 500x375] [--repeats 3]

The images are synthetic photographs (smooth colour fields, edges, texture, sensor noise) of
about `--size` pixels, a quarter of them portrait, saved as quality-90 JPEGs and prepared as a
small TFDS dataset in a temporary directory, so the tf.data figures include TFRecord reading
from the in-memory cache, shuffling, batching (64) and the copy to numpy, exactly as training
runs them. Every variant does: decode, resize the shorter side to 256, random 224 crop, random
flip, ImageNet normalisation to float32 (the decoded cache decodes and resizes in the warm-up
pass only, as after the first epoch of training).

Figures: images/s of wall time, and images per CPU-second of this process (all its threads),
which is the per-core rate and is robust to other jobs on a shared machine. Each variant is
timed `--repeats` times, interleaved, and the best wall figure and the median CPU figure are
kept.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import cpu_description  # noqa: E402
from wrna_jax.data import arrays, device_preprocessing, pipeline, preprocessing  # noqa: E402  (hides GPUs from TF)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from etils import epath  # noqa: E402

BATCH = 64


def machine() -> str:
    """CPU model, cores, load, and the TF / Pillow versions."""
    return f"{cpu_description()}; tensorflow {tf.__version__}, Pillow {Image.__version__}"


def synthetic_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 RGB image with the statistics JPEG cares about: mostly smooth, some edges and
    texture, a little noise (quality-90 JPEGs of about 40-70 kB at 500x375)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(6):  # Smooth colour fields.
        fy, fx = rng.uniform(0.002, 0.02, 2)
        phase = rng.uniform(0, 2 * np.pi)
        image += rng.uniform(10, 40, 3) * np.sin(fy * y * 2 * np.pi + fx * x * 2 * np.pi
                                                  + phase)[..., None]
    for _ in range(5):  # Objects with sharp edges.
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(20, 120)
        inside = (y - cy) ** 2 + ((x - cx) * rng.uniform(0.5, 2)) ** 2 < radius ** 2
        image[inside] += rng.uniform(-60, 60, 3)
    texture = rng.normal(0, 1, (height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    texture = np.kron(texture, np.ones((4, 4, 1), np.float32))[:height, :width]
    image += 8 * texture + rng.normal(0, 3, image.shape)
    return np.clip(image + 128, 0, 255).astype(np.uint8)


def make_jpegs(count: int, height: int, width: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    jpegs = []
    for index in range(count):
        h, w = (height, width) if index % 4 else (width, height)
        buffer = io.BytesIO()
        Image.fromarray(synthetic_photo(rng, h, w)).save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    return jpegs


class BenchImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The benchmark's JPEGs as a TFDS dataset (stored bytes unchanged, like the real ones)."""

    VERSION = tfds.core.Version("1.0.0")
    # Run as a script, the module is __main__: name the files TFDS would look up itself.
    code_path = epath.Path(__file__)
    pkg_dir_path = epath.Path(__file__).parent

    def __init__(self, *, jpeg_dir: str, **kwargs) -> None:
        self._jpeg_dir = jpeg_dir
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict]]:
        for index, name in enumerate(sorted(os.listdir(self._jpeg_dir))):
            yield name, {"image": os.path.join(self._jpeg_dir, name), "label": index % 10}


def tf_rate(builder: tfds.core.DatasetBuilder, preprocess_fn: Callable, threads: int,
            num_images: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of the training pipeline over
    `num_images` images, after a warm-up pass over the dataset."""
    ds = pipeline.create_split(builder, "train", BATCH, train=True, seed=0,
                               preprocess_fn=preprocess_fn)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    batches = pipeline.as_numpy_batches(ds.with_options(options))
    warm_up = -(-builder.info.splits["train"].num_examples // BATCH)
    for _ in range(warm_up):  # One pass fills the cache and the prefetch buffer.
        next(batches)
    num_batches = max(1, num_images // BATCH)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(batches)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = num_batches * BATCH
    return images / wall, images / cpu


def pil_rate(jpegs: list[bytes], num_images: int) -> tuple[float, float]:
    """(images per wall second, per CPU second) of the same augmentation in PIL + numpy, one
    process: decode, resize shorter side to 256 (bilinear), random 224 crop, flip, normalise."""
    rng = np.random.default_rng(0)
    mean = np.array(preprocessing.IMAGENET_MEAN, np.float32) * 255
    inv_std = 1 / (np.array(preprocessing.IMAGENET_STD, np.float32) * 255)

    def one(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        width, height = image.size
        scale = 256 / min(width, height)
        image = image.resize((max(256, int(width * scale)), max(256, int(height * scale))),
                             Image.BILINEAR)
        left = rng.integers(0, image.size[0] - 224 + 1)
        top = rng.integers(0, image.size[1] - 224 + 1)
        image = image.crop((left, top, left + 224, top + 224))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return (np.asarray(image, np.float32) - mean) * inv_std

    for data in jpegs[:16]:
        one(data)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(num_images):
        one(jpegs[index % len(jpegs)])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return num_images / wall, num_images / cpu


def device_rate(builder: tfds.core.DatasetBuilder, decoded: preprocessing.FineGrainedPreprocess,
                num_images: int) -> tuple[float, float]:
    """(images per wall second, per CPU second) of the device feed's training batches on this
    CPU: the decoded cache's images in the prepared layout, gathered and augmented by XLA."""
    ds = builder.as_dataset(split="train", shuffle_files=False, decoders=decoded.decoders)
    pairs = [(e["image"], int(e["label"])) for e in tfds.as_numpy(ds.map(decoded.decode_and_resize))]
    held = arrays.stack(pairs, (256, arrays.long_side(256, 1.5), 3), len(pairs), long=384, image_size=224)
    split = {name: jnp.asarray(getattr(held, name)) for name in arrays.FILES}

    @jax.jit
    def batch(split, indices, keys):
        picked = {name: split[name][indices] for name in arrays.FILES}
        return device_preprocessing.fine_grained(picked["images"], picked["sizes"], picked["transposed"], keys,
                                                 image_size=224, ten_crops=False, mean=preprocessing.IMAGENET_MEAN,
                                                 std=preprocessing.IMAGENET_STD)

    rng = np.random.default_rng(0)
    draw = lambda step: (rng.integers(0, len(pairs), BATCH).astype(np.int32),
                         jax.random.split(jax.random.PRNGKey(step), BATCH))
    batch(split, *draw(0)).block_until_ready()
    num_batches = max(1, num_images // BATCH)
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(num_batches):
        out = batch(split, *draw(step))
    out.block_until_ready()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return num_batches * BATCH / wall, num_batches * BATCH / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="distinct JPEGs generated")
    parser.add_argument("--timed", type=int, default=2048, help="images timed per measurement")
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the landscape images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_dir = os.path.join(tmp, "jpegs")
        os.makedirs(jpeg_dir)
        jpegs = make_jpegs(args.images, height, width)
        for index, data in enumerate(jpegs):
            with open(os.path.join(jpeg_dir, f"{index:05d}.jpg"), "wb") as f:
                f.write(data)
        print(f"{len(jpegs)} JPEGs of {width}x{height} (a quarter portrait), quality 90, "
              f"{np.mean([len(j) for j in jpegs]) / 1024:.0f} kB on average; batch {BATCH}.")
        builder = BenchImages(jpeg_dir=jpeg_dir, data_dir=os.path.join(tmp, "tfds"))
        builder.download_and_prepare()

        fused = preprocessing.FineGrainedPreprocess(train=True)

        def decode_first(example: dict) -> dict:  # Same work without decode-and-crop fusion.
            return fused({**example, "image": tf.io.decode_jpeg(example["image"], channels=3)})

        decode_first.decoders = fused.decoders  # type: ignore[attr-defined]
        decoded = preprocessing.FineGrainedPreprocess(train=True, decoded_cache=True)
        variants: dict[str, Callable[[], tuple[float, float]]] = {
            "PIL + numpy, 1 process": lambda: pil_rate(jpegs, args.timed),
            "tf.data fused, 1 thread": lambda: tf_rate(builder, fused, 1, args.timed),
            "tf.data fused, 2 threads": lambda: tf_rate(builder, fused, 2, args.timed),
            "tf.data decode-then-crop, 1 thread": lambda: tf_rate(builder, decode_first, 1,
                                                                  args.timed),
            "tf.data decode-then-crop, 2 threads": lambda: tf_rate(builder, decode_first, 2,
                                                                   args.timed),
            "tf.data decoded cache, 1 thread": lambda: tf_rate(builder, decoded, 1, args.timed),
            "tf.data decoded cache, 2 threads": lambda: tf_rate(builder, decoded, 2, args.timed),
            "device feed, XLA on this CPU": lambda: device_rate(builder, decoded, args.timed),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                results[name].append(run())

    print(f"{'variant':38s} {'images/s (wall, best)':>22s} {'images/CPU-s (median)':>22s}")
    per_core = {}
    for name, rates in results.items():
        best_wall = max(rate[0] for rate in rates)
        per_core[name] = statistics.median(rate[1] for rate in rates)
        print(f"{name:38s} {best_wall:22.0f} {per_core[name]:22.0f}")
    fused = per_core["tf.data fused, 1 thread"]
    print(f"per core, tf.data fused / PIL: {fused / per_core['PIL + numpy, 1 process']:.2f}x; "
          f"fused / decode-then-crop: {fused / per_core['tf.data decode-then-crop, 1 thread']:.2f}x; "
          f"decoded cache / fused: {per_core['tf.data decoded cache, 1 thread'] / fused:.2f}x; "
          f"device feed / decoded cache: "
          f"{per_core['device feed, XLA on this CPU'] / per_core['tf.data decoded cache, 1 thread']:.2f}x")


if __name__ == "__main__":
    main()
