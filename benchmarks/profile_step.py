"""Where a WRN-50-2 train step spends its time: a JAX profiler trace of a few steps, summarised
by kernel category (convolutions, matrix products, fused elementwise/BatchNorm/reduction
kernels, copies) and as the top kernels, with the device's busy time against wall time (the
gap is host overhead or waiting).

    python benchmarks/profile_step.py [--variant paper] [--batch 128] [--dtype bfloat16]
        [--steps 5] [--trace-dir /tmp/wrna_profile]

The full trace (perfetto_trace.json.gz, open it at ui.perfetto.dev) stays in --trace-dir.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import itertools
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine  # noqa: E402
from benchmarks.train_throughput import VARIANTS, synthetic_batches, variant_config  # noqa: E402
from wrna_jax import parallel  # noqa: E402
from wrna_jax.models import create_model  # noqa: E402
from wrna_jax.state import create_train_state  # noqa: E402
from wrna_jax.steps import make_train_step  # noqa: E402

# First matching substring (lower-cased kernel name) names the category.
CATEGORIES = (("convolution", ("conv", "cudnn", "xmma", "implicit", "wgrad", "dgrad", "fprop")),
              ("matrix product", ("gemm", "cublas", "nvjet", "matmul", "dot")),
              ("copy / transpose", ("memcpy", "memset", "copy", "transpose")),
              ("fused elementwise / BatchNorm / reduction", ("fusion", "loop", "reduce", "input",
                                                              "triton", "scatter", "gather")))


def category(name: str) -> str:
    lower = name.lower()
    for label, keys in CATEGORIES:
        if any(key in lower for key in keys):
            return label
    return "other"


def device_kernels(trace_dir: str) -> list[tuple[str, float]]:
    """(kernel name, microseconds) of the kernels on an accelerator's streams in the newest
    trace (the derived 'XLA Ops' / 'XLA Modules' lines would count them twice)."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    meta = [e for e in events if e.get("ph") == "M"]
    device_pids = {e["pid"] for e in meta if e.get("name") == "process_name"
                   and "/device:" in e["args"]["name"] and "CPU" not in e["args"]["name"]}
    threads = {(e["pid"], e.get("tid")): e["args"]["name"] for e in meta
               if e.get("name") == "thread_name" and e["pid"] in device_pids}
    streams = {key for key, name in threads.items() if "stream" in name.lower()} or set(threads)
    return [(e["name"], float(e["dur"])) for e in events
            if e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in streams and "dur" in e]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="paper", choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--trace-dir", default="/tmp/wrna_profile")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    mesh = parallel.create_mesh()
    sharding = parallel.batch_sharding(mesh)
    config = variant_config(args.variant, args.batch, args.dtype)
    model = create_model(config)
    state = create_train_state(config, model, (224, 224, 3), mesh, steps_per_epoch=100)
    step = make_train_step(config, model, mesh, steps_per_epoch=100)
    batches = itertools.cycle([parallel.shard_batch(b, sharding)
                               for b in synthetic_batches(args.batch // jax.process_count(), 120)])
    for _ in range(3):
        state, metrics = step(state, next(batches))
    jax.block_until_ready(metrics["loss"])
    with jax.profiler.trace(args.trace_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, next(batches))
        jax.block_until_ready(metrics["loss"])
        wall = (time.perf_counter() - start) / args.steps * 1e3
    kernels = device_kernels(args.trace_dir)
    print(f"machine: {machine()}")
    print(f"{args.variant}, batch {args.batch}, {args.dtype}, {args.steps} traced steps; "
          f"trace in {args.trace_dir}")
    if not kernels:
        print(f"No accelerator events in the trace (backend {jax.default_backend()}); wall "
              f"{wall:.1f} ms/step.")
        return
    by_category: dict[str, float] = collections.defaultdict(float)
    by_name: dict[str, float] = collections.defaultdict(float)
    for name, micros in kernels:
        by_category[category(name)] += micros / 1e3 / args.steps
        by_name[name] += micros / 1e3 / args.steps
    busy = sum(by_category.values())
    print(f"wall {wall:.1f} ms/step; device kernels {busy:.1f} ms/step "
          f"({100 * busy / wall:.0f}% of wall; kernels on parallel streams can overlap)")
    for label, ms in sorted(by_category.items(), key=lambda kv: -kv[1]):
        print(f"  {label:44s} {ms:8.2f} ms  {100 * ms / busy:5.1f}%")
    print(f"top {args.top} kernels (ms per step):")
    for name, ms in sorted(by_name.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {ms:7.2f}  {name[:110]}")
    summary = {"variant": args.variant, "batch": args.batch, "dtype": args.dtype,
               "wall_ms": wall, "busy_ms": busy, "categories_ms": dict(by_category),
               "top_kernels_ms": dict(sorted(by_name.items(), key=lambda kv: -kv[1])[:50])}
    with open(os.path.join(args.trace_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
