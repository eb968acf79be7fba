"""`train.py` end to end (its loop, its feed, its logging and checkpoints) against the train step
alone on batches already on the devices, for each feed, in one run:

    python benchmarks/end_to_end.py --config=configs/synthetic.py --feeds=device [--steps 60]
        [--set model.dtype=bfloat16 --set batch_size=128 ...]

For each feed the loop trains `--steps` steps (evaluating once, at the end) in a temporary
workdir; its images/s is the median of the `steps_per_sec` it logs every `--log_every` steps,
the first window (compilation) left out. "model only" times the same config's compiled step on
one batch that stays on the devices (`benchmarks.common.time_train_step`). The ratio
end-to-end / model-only says what the input and the loop cost. Imports no TensorFlow unless a
feed needs it (the host feed).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wrna_jax import xla_flags  # noqa: E402

xla_flags.apply_cpu_defaults()

from benchmarks.common import machine, time_train_step  # noqa: E402
from wrna_jax import feeds, parallel  # noqa: E402
from wrna_jax.models import create_model  # noqa: E402
from wrna_jax.state import create_train_state  # noqa: E402
from wrna_jax.train import train_and_evaluate  # noqa: E402


def load_config(spec: str, overrides: list[str]):
    """configs/x.py[:arg] with `a.b=value` overrides (Python literals, else strings)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    for item in overrides:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def end_to_end(config, feed: str, steps: int, log_every: int) -> float:
    """Images/s of train_and_evaluate with `feed` over `steps` steps (median logged window)."""
    config = config.copy_and_resolve_references()
    config.input.feed = feed
    config.log_every_steps = log_every
    config.early_stop_patience = 0
    with tempfile.TemporaryDirectory() as workdir:
        mesh = parallel.create_mesh(config.num_devices)
        data = feeds.create_feed(config, mesh, ("train_split",), kind=feed, announce=lambda line: None)
        steps_per_epoch = data.num_examples(data.split("train_split")) // config.batch_size
        with config.ignore_type():  # a fraction of an epoch
            config.num_epochs = steps / steps_per_epoch
            config.eval_every_epochs = config.num_epochs
        train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rates = [r["steps_per_sec"] for r in map(json.loads, f) if "steps_per_sec" in r]
    return statistics.median(rates[1:] or rates) * config.batch_size


def model_only(config) -> float:
    """Images/s of the compiled step alone, the batch on the devices."""
    mesh = parallel.create_mesh(config.num_devices)
    data = feeds.create_feed(config, mesh, ("train_split",), announce=lambda line: None)
    model = create_model(config)
    state = create_train_state(config, model, data.input_shape, mesh, steps_per_epoch=100)
    return config.batch_size / time_train_step(config, model, state, mesh, data.input_shape, config.batch_size,
                                               repeats=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="configs/x.py[:arg]")
    parser.add_argument("--feeds", default="device,host")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log_every", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], help="a.b=value config override")
    args = parser.parse_args()
    config = load_config(args.config, args.set)
    print(machine())
    print(f"{args.config} {' '.join(args.set)}: batch {config.batch_size}, {args.steps} steps per feed")
    reference = model_only(config)
    print(f"{'model only (batch on the devices)':40s} {reference:10.1f} images/s")
    for feed in args.feeds.split(","):
        rate = end_to_end(config, feed, args.steps, args.log_every)
        print(f"{'train.py end to end, ' + feed + ' feed':40s} {rate:10.1f} images/s   "
              f"{rate / reference:.3f} of model only")


if __name__ == "__main__":
    main()
