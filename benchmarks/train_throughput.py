"""Training throughput (images/s) and model FLOPs utilisation of WRN-50-2 at 224x224: the plain
backbone and the three attention presets, as the fine-grained configs build them.

    python benchmarks/train_throughput.py [--batch 128] [--dtype bfloat16] [--steps 20]
        [--variants plain,paper,released,attend_rectify] [--feeds device,host,pipeline]

Feeds: `device` times the train step alone on batches already on the devices (rotating among
three, so nothing is served from cache); `host` adds the per-step host-to-device copy of numpy
batches through `parallel.prefetch_to_mesh`, as training does; `pipeline` runs the real tf.data
training pipeline (JPEG decode, resize, random crop, flip) on synthetic 500x375 JPEGs in
front of the step (needs tensorflow, skipped where it is not installed).

MFU is model FLOPs utilisation: 3x the forward pass's convolution and matrix-product FLOPs per
image (forward plus a backward of twice its cost) times images/s, over the device's dense peak for the compute dtype
(`--peak-tflops` overrides the table; none is known for CPUs). Each figure is the median over
`--windows` windows of `--steps` steps, synchronised only at the end of a window.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine, matmul_flops  # noqa: E402
from configs import dogs  # noqa: E402
from wrna_jax import parallel  # noqa: E402
from wrna_jax.models import create_model  # noqa: E402
from wrna_jax.state import create_train_state  # noqa: E402
from wrna_jax.steps import make_train_step  # noqa: E402

# Dense peak TFLOP/s by device kind substring: (bfloat16, float32 as XLA runs it on the GPU,
# i.e. TF32 tensor cores). Datasheet figures (SXM parts).
PEAK_TFLOPS = {"H200": (989.0, 494.5), "H100": (989.0, 494.5), "A100": (312.0, 156.0),
               "L40S": (362.0, 183.0), "V100": (125.0, 15.7)}
VARIANTS = ("plain", "paper", "released", "attend_rectify")
FEEDS = ("device", "host", "pipeline")


def variant_config(variant: str, batch: int, dtype: str):
    """The Stanford Dogs config (120 classes) for `variant`: 'plain' (the backbone, AD=0),
    'paper' (the paper's recipe: AD=2, AW=2, avg reduction), 'released' (the master-branch
    module: AD=3, AW=2, projection) or 'attend_rectify' (the dev-branch module of the default
    recipe: AD=3, AW=2). BatchNorm statistics use the recipe's groups (32 images) when they
    divide the batch, else the whole batch."""
    config = dogs.get_config("paper" if variant == "paper" else None)
    if variant == "plain":
        config.attention.depth = 0
    elif variant == "released":
        config.attention.preset = "released"
    group = config.model.bn_group_size
    if group and batch % group:
        config.model.bn_group_size = None
    config.model.dtype = dtype
    config.batch_size = batch
    config.init_from = None
    return config


def peak_flops(device: jax.Device, dtype: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for name, (bf16, fp32) in PEAK_TFLOPS.items():
        if name in device.device_kind:
            return (bf16 if dtype == "bfloat16" else fp32) * 1e12
    return None


def synthetic_batches(batch: int, num_classes: int, count: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"image": rng.standard_normal((batch, 224, 224, 3), np.float32),
             "label": rng.integers(0, num_classes, batch).astype(np.int32),
             "mask": np.ones(batch, bool)} for _ in range(count)]


def pipeline_batches(batch: int, tmp: str) -> Iterator[dict[str, np.ndarray]] | None:
    """The training tf.data pipeline over 256 synthetic JPEGs, or None without tensorflow."""
    try:
        from benchmarks.input_pipeline import BenchImages, make_jpegs
        from wrna_jax.data import pipeline, preprocessing
    except ImportError as error:
        print(f"pipeline feed skipped: {error}")
        return None
    jpeg_dir = os.path.join(tmp, "jpegs")
    os.makedirs(jpeg_dir, exist_ok=True)
    for index, data in enumerate(make_jpegs(256, 375, 500)):
        with open(os.path.join(jpeg_dir, f"{index:05d}.jpg"), "wb") as f:
            f.write(data)
    builder = BenchImages(jpeg_dir=jpeg_dir, data_dir=os.path.join(tmp, "tfds"))
    builder.download_and_prepare()
    ds = pipeline.create_split(builder, "train", batch // jax.process_count(), train=True, seed=0,
                               preprocess_fn=preprocessing.FineGrainedPreprocess(train=True))
    return pipeline.as_numpy_batches(ds)


def forward_flops(model, state, batch: int) -> float:
    """Convolution and matrix-product FLOPs per image of one forward pass."""
    return matmul_flops(lambda s, x: model.apply({"params": s.params, "batch_stats": s.batch_stats},
                                                 x).log_probs,
                        state, jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32)) / batch


def _percent(fraction: float) -> str:
    return "   n/a" if np.isnan(fraction) else f"{100 * fraction:5.1f}%"


def timed_windows(step, state, batches: Iterator, steps: int, windows: int) -> tuple[list[float], object]:
    """Seconds per step of each window, synchronising only at the window's end."""
    state, metrics = step(state, next(batches))
    jax.block_until_ready(metrics["loss"])
    state, metrics = step(state, next(batches))  # Second warm-up step: donated buffers settle.
    jax.block_until_ready(metrics["loss"])
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, next(batches))
        jax.block_until_ready(metrics["loss"])
        times.append((time.perf_counter() - start) / steps)
    return times, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="global batch")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--feeds", default="device,host")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    variants, feeds = args.variants.split(","), args.feeds.split(",")
    for name, valid in (("variant", VARIANTS), ("feed", FEEDS)):
        bad = [v for v in (variants if name == "variant" else feeds) if v not in valid]
        if bad:
            parser.error(f"unknown {name}(s) {bad}; choose from {', '.join(valid)}")

    mesh = parallel.create_mesh()
    sharding = parallel.batch_sharding(mesh)
    parallel.check_batch_size(args.batch, mesh)
    device = jax.devices()[0]
    peak = peak_flops(device, args.dtype, args.peak_tflops)
    print(f"machine: {machine()}")
    print(f"WRN-50-2 @224, 120 classes, global batch {args.batch}, {args.dtype} compute, "
          f"{mesh.devices.size} device(s); peak used for MFU: "
          f"{f'{peak / 1e12:.1f} TFLOP/s' if peak else 'unknown'}; median of {args.windows} "
          f"windows of {args.steps} steps")
    local = args.batch // jax.process_count()
    host = synthetic_batches(local, 120)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_batches = pipeline_batches(local, tmp) if "pipeline" in feeds else None
        for variant in variants:
            config = variant_config(variant, args.batch, args.dtype)
            model = create_model(config)
            state = create_train_state(config, model, (224, 224, 3), mesh, steps_per_epoch=100)
            params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
            flops = 3 * forward_flops(model, state, local)
            step = make_train_step(config, model, mesh, steps_per_epoch=100)
            sources = {
                "device": lambda: itertools.cycle([parallel.shard_batch(b, sharding) for b in host]),
                "host": lambda: parallel.prefetch_to_mesh(itertools.cycle(host), sharding),
                "pipeline": lambda: (parallel.prefetch_to_mesh(jpeg_batches, sharding)
                                     if jpeg_batches is not None else None),
            }
            for feed in feeds:
                batches = sources[feed]()
                if batches is None:
                    continue
                times, state = timed_windows(step, state, batches, args.steps, args.windows)
                seconds = statistics.median(times)
                rate = args.batch / seconds
                mfu = flops * rate / peak if peak else float("nan")
                rows.append((variant, feed, params, flops / 1e9, 1000 * seconds, rate, mfu))
                print(f"  {variant:14s} {feed:9s} {1000 * seconds:8.1f} ms/step {rate:8.1f} images/s "
                      f"MFU {_percent(mfu)}  (windows: "
                      + ", ".join(f"{args.batch / t:.1f}" for t in times) + " images/s)", flush=True)
    print(f"\n{'variant':14s} {'feed':9s} {'params':>12s} {'train GFLOP/img':>16s} {'ms/step':>8s} "
          f"{'images/s':>9s} {'MFU':>6s}")
    for variant, feed, params, gflops, ms, rate, mfu in rows:
        print(f"{variant:14s} {feed:9s} {params:12,d} {gflops:16.1f} {ms:8.1f} {rate:9.1f} "
              f"{_percent(mfu)}")
    base = {feed: rate for variant, feed, *_, rate, _ in rows if variant == "plain"}
    for variant, feed, *_, rate, _ in rows:
        if variant != "plain" and feed in base:
            print(f"{variant} / plain throughput ({feed}): {rate / base[feed]:.3f}")


if __name__ == "__main__":
    main()
