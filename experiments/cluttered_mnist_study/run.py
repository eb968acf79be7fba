"""The paper's cluttered-MNIST study (section 4.1, Figure 4b-e), in miniature on a CPU budget or
at the paper's data scale.

    nice -n 10 python -m experiments.cluttered_mnist_study --workdir=runs/ablation --docs_dir=docs/ablation
    python -m experiments.cluttered_mnist_study --paper_data --mnist_dir=DIR --models=baseline,ad4_aw2,stn \
        --epochs=2 --workdir=runs/paper_cmnist

`--paper_data`: the authors' protocol on the full MNIST (configs/cluttered_mnist.py:paper_data).
`--input=device` (default): canvases generated with numpy and kept on the device (train.py's
device feed, no TensorFlow needed); `--input=tfds`: train.py's host (tf.data) feed.
`--models`: only these models (table names), seed by seed, instead of the staged plan below.

Every model gets the same data, schedule and number of steps, and `--seeds` seeds:

1. depth:    the plain CNN (AD=0), AD = 1..5 at AW = 1, and the CNN behind a spatial
             transformer (STN, Figure 4e);
2. width:    AW = 2 and 4 at the best AD (AW = 1 comes from stage 1);
3. ablation: at the best AD/AW: sigmoid instead of softmax masks, no gates, no regulariser
             (the regulariser is 0 with one head: with AW = 1 it is ablated at AW = 2).

"Best" is the highest mean *validation* accuracy over the seeds; test accuracy is only reported.
Each run lives in <workdir>/runs/<name>_s<seed> (checkpoints, metrics, eval_best/ with
eval_results.json and the figures); a run whose eval_best/eval_results.json and summary exist is
skipped, so running the command again after an interruption loses at most one unfinished run
(which itself resumes from its last checkpoint). The table (markdown and JSON) and the Figure
4b-e analogues go to <workdir>/results and, with --docs_dir, are copied there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from typing import Any, Callable, Sequence

from experiments.cluttered_mnist_study.plan import (BASELINE, DEPTHS, NUM_RUN_CONFIGS, SWEEP, WIDTHS,
                                                    Variant, ablation_stage, depth_stage, load_run, make_config,
                                                    train_run, variant_named, width_stage)
from experiments.cluttered_mnist_study.report import aggregate, best, markdown_table, write_comparison, write_results


class Progress:
    """'[i/N] run, elapsed, ETA' lines; the ETA uses the mean time of the runs done here."""

    def __init__(self, total: int, estimate_seconds: float):
        self.total, self.done, self.estimate = total, 0, estimate_seconds
        self.start, self.trained = time.perf_counter(), []

    def finished(self, seconds: float | None) -> None:
        self.done += 1
        if seconds is not None:
            self.trained.append(seconds)

    def line(self, what: str) -> str:
        elapsed = time.perf_counter() - self.start
        per_run = statistics.fmean(self.trained) if self.trained else self.estimate
        eta = (self.total - self.done) * per_run
        return (f"[{self.done + 1}/{self.total}] {what} | elapsed {elapsed / 60:.1f} min | "
                f"ETA {eta / 60:.1f} min")


def run_stage(variants: Sequence[Variant], seeds: Sequence[int], args: argparse.Namespace,
              progress: Progress, records: dict[str, list[dict[str, Any]]],
              train: Callable[[Variant, int, argparse.Namespace], dict[str, Any]]) -> None:
    for variant in variants:
        for seed in seeds:
            record = load_run(args.workdir, variant, seed)
            if record is not None:
                print(progress.line(f"{variant.name} seed {seed}: done before, skipped"), flush=True)
                progress.finished(None)
            else:
                print(progress.line(f"{variant.name} seed {seed}: training ({variant.label})"), flush=True)
                start = time.perf_counter()
                record = train(variant, seed, args)
                progress.finished(time.perf_counter() - start)
                if record.get("test_accuracy") is None:
                    print(f"  -> {record['status']}, no checkpoint to evaluate", flush=True)
                else:
                    print(f"  -> val {100 * record['val_accuracy']:.2f}%, test {100 * record['test_accuracy']:.2f}% "
                          f"in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
            records.setdefault(variant.name, []).append(record)


def split_sizes(args: argparse.Namespace) -> dict[str, int]:
    """num_train, num_validation and num_test of the study's canvases."""
    fields = make_config(BASELINE, 0, args).dataset.cluttered_mnist
    return {key: fields[key] for key in ("num_train", "num_validation", "num_test")}


def steps_per_run(args: argparse.Namespace) -> int:
    """Training steps of one run at the study's config batch size."""
    return split_sizes(args)["num_train"] // make_config(BASELINE, 0, args).batch_size * args.epochs


def estimate_run_seconds(args: argparse.Namespace) -> float:
    """Idle-machine estimate: training steps, evaluations and compilation of one run."""
    sizes = split_sizes(args)
    eval_images = args.epochs * sizes["num_validation"] + len(SWEEP) * sizes["num_test"] + 500
    return steps_per_run(args) * args.seconds_per_step + eval_images / args.eval_images_per_second + args.overhead_seconds


def main(argv: Sequence[str] | None = None,
         train: Callable[[Variant, int, argparse.Namespace], dict[str, Any]] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/ablation")
    parser.add_argument("--docs_dir", default=None, help="also copy the table and figures here")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num_train", type=int, default=None, help="default 19,200 (200,000 with --paper_data)")
    parser.add_argument("--num_validation", type=int, default=None, help="default 2,000 (100,000 with --paper_data)")
    parser.add_argument("--num_test", type=int, default=None, help="default 2,000 (100,000 with --paper_data)")
    parser.add_argument("--paper_data", action="store_true",
                        help="the authors' data protocol on the full MNIST (configs/cluttered_mnist.py:paper_data)")
    parser.add_argument("--mnist_dir", default=None, help="with --paper_data: the directory of the four MNIST files")
    parser.add_argument("--input", choices=("device", "tfds"), default="device",
                        help="device: canvases generated with numpy and kept on the device "
                             "(train.py's device feed, no TensorFlow); tfds: train.py's host (tf.data) feed")
    parser.add_argument("--models", default=None,
                        help="comma-separated models to compare instead of the staged plan, e.g. "
                             "baseline,ad4_aw2,stn (names as in the table: ad<D>_aw<W>[_sigmoid][_nogates][_noreg])")
    parser.add_argument("--epochs", type=int, default=1, help="validation after each")
    parser.add_argument("--seconds_per_step", type=float, default=0.28,
                        help="budget estimate only: idle 2-core CPU, the config's batch")
    parser.add_argument("--eval_images_per_second", type=float, default=1500.0, help="budget estimate only")
    parser.add_argument("--overhead_seconds", type=float, default=15.0, help="budget estimate only")
    args = parser.parse_args(argv)
    if not args.paper_data:
        for key, value in (("num_train", 19_200), ("num_validation", 2_000), ("num_test", 2_000)):
            setattr(args, key, value if getattr(args, key) is None else getattr(args, key))
    batch = make_config(BASELINE, 0, args).batch_size
    sizes = split_sizes(args)
    if args.seeds < 1 or sizes["num_train"] < batch or args.epochs <= 0 or min(sizes.values()) < 1:
        parser.error(f"--seeds >= 1, --num_train >= {batch} (one batch), --epochs > 0 and positive "
                     "--num_validation/--num_test are required.")
    try:
        compared = [variant_named(name) for name in args.models.split(",")] if args.models else None
    except ValueError as err:
        parser.error(f"--models: {err}")
    if args.paper_data:
        from wrna_jax.data import canvases

        canvases.spec_of(make_config(BASELINE, 0, args).dataset)  # the MNIST files are there
    if train is None:
        train = train_run
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)

    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from benchmarks.common import machine

    seeds = list(range(args.seeds))
    total = (len(compared) if compared else NUM_RUN_CONFIGS) * len(seeds)
    per_run = estimate_run_seconds(args)
    config = make_config(BASELINE, 0, args)
    steps = steps_per_run(args)
    print(f"Machine: {machine()}", flush=True)
    print(f"Budget: {total // len(seeds)} models x {len(seeds)} seeds = {total} runs of {steps} steps "
          f"(batch {config.batch_size}, {sizes['num_train']:,} canvases, {args.epochs} epoch(s), lr "
          f"{config.optimizer.learning_rate:g} x{config.schedule.factor:g} at 75%), "
          f"eval on {sizes['num_validation']:,} validation and {len(SWEEP)} (D sweep) x {sizes['num_test']:,} "
          f"test canvases, data {config.dataset.cluttered_mnist.source} ({config.dataset.cluttered_mnist.composition}), "
          f"input {args.input}; "
          f"about {per_run / 60:.1f} min per run, {total * per_run / 60:.0f} min in all on an idle "
          "2-core CPU (longer when shared).", flush=True)
    progress = Progress(total, per_run)
    records: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()

    meta = {"machine": machine(), "runs": total, "seeds": seeds, "steps_per_run": steps, **sizes,
            "epochs": args.epochs, "input": args.input, "source": config.dataset.cluttered_mnist.source,
            "composition": config.dataset.cluttered_mnist.composition, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "selection": "highest mean validation accuracy; test accuracy reported"}
    if compared:
        for seed in seeds:  # seed by seed: an early stop leaves every model with as many seeds
            run_stage(compared, [seed], args, progress, records, train)
        rows = aggregate(compared, records)
        paths = write_comparison(rows, os.path.join(args.workdir, "results"), _timing(meta, records, start))
        return _finish(rows, paths, meta, args)

    stage1 = depth_stage()
    run_stage(stage1, seeds, args, progress, records, train)
    rows = aggregate(stage1, records)
    best_depth = best(rows, [f"ad{d}_aw1" for d in DEPTHS])["depth"]
    print(f"Best AD by validation accuracy: {best_depth}", flush=True)

    stage2 = width_stage(best_depth)
    run_stage(stage2, seeds, args, progress, records, train)
    rows = aggregate(stage1 + stage2, records)
    best_width = best(rows, [f"ad{best_depth}_aw{w}" for w in WIDTHS])["width"]
    print(f"Best AW at AD={best_depth} by validation accuracy: {best_width}", flush=True)

    stage3 = ablation_stage(best_depth, best_width)
    run_stage(stage3, seeds, args, progress, records, train)
    rows = aggregate(stage1 + stage2 + stage3, records)
    paths = write_results(rows, os.path.join(args.workdir, "results"), best_depth, best_width,
                          [v.name for v in stage3], _timing(meta, records, start))
    return _finish(rows, paths, meta, args)


def _timing(meta: dict[str, Any], records: dict[str, list[dict[str, Any]]], start: float) -> dict[str, Any]:
    meta["wall_seconds_last_invocation"] = time.perf_counter() - start
    # train + eval time of every run, earlier invocations included
    meta["run_seconds_total"] = sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0)
                                    for runs in records.values() for r in runs)
    return meta


def _finish(rows: list[dict[str, Any]], paths: dict[str, str], meta: dict[str, Any],
            args: argparse.Namespace) -> dict[str, str]:
    print(markdown_table(rows))
    print(f"Wall time of this invocation: {meta['wall_seconds_last_invocation'] / 60:.1f} min; sum over runs "
          f"(including earlier invocations): {meta['run_seconds_total'] / 60:.1f} min. Machine: {meta['machine']}")
    if args.docs_dir:
        os.makedirs(args.docs_dir, exist_ok=True)
        for path in paths.values():
            shutil.copy(path, args.docs_dir)
        print(f"Copied the table and figures to {args.docs_dir}")
    for path in paths.values():
        print(path)
    return paths

if __name__ == "__main__":
    main()
