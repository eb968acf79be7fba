"""Where a cluttered-MNIST train step spends its time on the CPU, layer by layer, forward and
backward: a JAX profiler trace of a few jitted steps, each XLA:CPU operation (thunk) attributed to
the flax module that produced it through the compiled program's metadata.

    python benchmarks/layer_time.py [--arg baseline] [--preset attend_rectify] [--batch 128]
        [--steps 10] [--rows 25] [--no-cpu-flags]

Rows are module paths (`backbone/conv1`, `att_conv3/attended_bn`, ...); `backbone` alone holds
the CNN's own pooling and ReLUs; operations XLA made up (layout copies it did not attribute) are
`(unattributed)`. Thunks of the two CPU threads overlap, so the column sums can exceed the wall
time per step. `--no-cpu-flags` leaves XLA:CPU's defaults (wrna_jax/xla_flags.py) off.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine  # noqa: E402

TRANSFORMS = re.compile(r"^(jvp|transpose|vmap|remat|checkpoint|cond|while|pjit|jit|body|branch)\b|\(")


def op_names(hlo: str) -> dict[str, str | None]:
    """Entry-computation instruction name -> the op_name of its metadata, or, for a fusion
    without one, the most common op_name inside the fused computation."""
    computations: dict[str, list[str]] = {}
    entry: dict[str, tuple[str | None, str | None]] = {}
    current, in_entry = None, False
    for line in hlo.splitlines():
        header = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header and not line.startswith(" "):
            current, in_entry = header.group(2), bool(header.group(1))
            computations[current] = []
            continue
        instruction = re.match(r"^\s+(?:ROOT )?%([\w.\-]+) = ", line)
        if instruction and current:
            op = re.search(r'op_name="([^"]+)"', line)
            calls = re.search(r"calls=%([\w.\-]+)", line)
            if op:
                computations[current].append(op.group(1))
            if in_entry:
                entry[instruction.group(1)] = (op.group(1) if op else None, calls.group(1) if calls else None)
    names = {}
    for name, (op, calls) in entry.items():
        inner = computations.get(calls or "", [])
        names[name] = op or (collections.Counter(inner).most_common(1)[0][0] if inner else None)
    return names


def layer_and_direction(op_name: str | None) -> tuple[str, str]:
    """('backbone/conv1', 'backward') from 'jit(train_step)/transpose(jvp(Net))/backbone/conv1/...'."""
    if op_name is None:
        return "(unattributed)", "other"
    op_name = op_name.split(";")[0]
    direction = "backward" if "transpose(" in op_name else "forward"
    modules = [part for part in op_name.split("/")[1:-1] if not TRANSFORMS.search(part)]
    modules = [part for part in modules if not re.search(r"[,>]|^\w+\.\w+", part)]  # einsum specs, methods
    if not modules:
        return "optimizer, loss and metrics", "other"
    return "/".join(modules[:2]), direction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arg", default=None, help="configs/cluttered_mnist.py argument, e.g. baseline")
    parser.add_argument("--preset", default=None, help="attention preset, e.g. attend_rectify")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--no-cpu-flags", action="store_true")
    args = parser.parse_args()
    if not args.no_cpu_flags:
        from wrna_jax import xla_flags

        xla_flags.apply_cpu_defaults()
    import jax

    from configs import cluttered_mnist
    from wrna_jax import parallel, steps
    from wrna_jax.models import create_model
    from wrna_jax.state import create_train_state

    config = cluttered_mnist.get_config(args.arg)
    if args.preset:
        config.attention.preset = args.preset
    model = create_model(config)
    mesh = parallel.create_mesh(1)
    state = create_train_state(config, model, (40, 40, 1), mesh, steps_per_epoch=100)
    step = steps.make_train_step(config, model, mesh, steps_per_epoch=100)
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch({"image": rng.random((args.batch, 40, 40, 1), np.float32),
                                  "label": rng.integers(0, 10, args.batch).astype(np.int32),
                                  "mask": np.ones(args.batch, bool)}, parallel.batch_sharding(mesh))
    names = op_names(step.lower(state, batch).compile().as_text())
    for _ in range(3):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    trace_dir = tempfile.mkdtemp(prefix="wrna_layer_time_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        wall = (time.perf_counter() - start) / args.steps * 1e3
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    table: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    for event in events:
        if event.get("ph") == "X" and event.get("name") in names:
            layer, direction = layer_and_direction(names[event["name"]])
            table[layer][direction] += event["dur"] / args.steps / 1e3
    total = sum(sum(row.values()) for row in table.values())
    print(f"machine: {machine()}")
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')}")
    print(f"cluttered-MNIST CNN, config argument {args.arg}, preset {args.preset or 'released'}, "
          f"batch {args.batch}, float32, {args.steps} traced steps: wall {wall:.1f} ms/step, "
          f"operations {total:.1f} ms/step")
    print(f"{'layer':36s} {'forward ms':>11s} {'backward ms':>12s} {'other ms':>9s} {'share':>6s}")
    rows = sorted(table.items(), key=lambda kv: -sum(kv[1].values()))
    for layer, row in rows[:args.rows]:
        print(f"{layer:36s} {row['forward']:11.2f} {row['backward']:12.2f} {row['other']:9.2f} "
              f"{100 * sum(row.values()) / total:5.1f}%")
    rest = rows[args.rows:]
    if rest:
        print(f"{f'({len(rest)} more rows)':36s} {sum(r['forward'] for _, r in rest):11.2f} "
              f"{sum(r['backward'] for _, r in rest):12.2f} {sum(r['other'] for _, r in rest):9.2f} "
              f"{100 * sum(sum(r.values()) for _, r in rest) / total:5.1f}%")


if __name__ == "__main__":
    main()
