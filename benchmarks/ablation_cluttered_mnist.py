"""The paper's cluttered-MNIST study (section 4.1, Figure 4b-e) in miniature, on a CPU budget.

    nice -n 10 python benchmarks/ablation_cluttered_mnist.py --workdir=runs/ablation \\
        --docs_dir=docs/ablation

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
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEPTHS = (1, 2, 3, 4, 5)
WIDTHS = (1, 2, 4)
SWEEP = (4, 8, 16, 32, 64)
NUM_RUN_CONFIGS = 1 + len(DEPTHS) + 1 + (len(WIDTHS) - 1) + 3  # baseline, AD, STN, AW, ablations
SUMMARY_FILE = "ablation_run.json"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model of the study; `name` is its workdir prefix and table label."""

    name: str
    stage: str
    depth: int = 0
    width: int = 1
    mask_fn: str = "softmax"
    gates: bool = True
    regularizer: bool = True
    stn: bool = False

    @property
    def label(self) -> str:
        if self.stn:
            return "STN + CNN (AD=0)"
        if not self.depth:
            return "baseline CNN (AD=0)"
        parts = [f"AD={self.depth}, AW={self.width}"]
        if self.mask_fn != "softmax":
            parts.append(f"{self.mask_fn} masks")
        if not self.gates:
            parts.append("no gates")
        if not self.regularizer:
            parts.append("no regulariser")
        return ", ".join(parts)


def attention(depth: int, width: int, stage: str, **changes: Any) -> Variant:
    """An attention variant named ad<D>_aw<W>[_sigmoid][_nogates][_noreg]."""
    tags = {"mask_fn": "sigmoid", "gates": "nogates", "regularizer": "noreg"}
    name = f"ad{depth}_aw{width}" + "".join(f"_{tags[k]}" for k in changes)
    return Variant(name=name, stage=stage, depth=depth, width=width, **changes)


BASELINE = Variant("baseline", "depth")
STN = Variant("stn", "depth", stn=True)


def depth_stage() -> list[Variant]:
    return [BASELINE] + [attention(d, 1, "depth") for d in DEPTHS] + [STN]


def width_stage(best_depth: int) -> list[Variant]:
    return [attention(best_depth, w, "width") for w in WIDTHS if w != 1]


def ablation_stage(best_depth: int, best_width: int) -> list[Variant]:
    reg_width = best_width if best_width > 1 else 2
    return [attention(best_depth, best_width, "ablation", mask_fn="sigmoid"),
            attention(best_depth, best_width, "ablation", gates=False),
            attention(best_depth, reg_width, "ablation", regularizer=False)]


def make_config(variant: Variant, seed: int, args: argparse.Namespace) -> Any:
    """configs/cluttered_mnist.py with the study's budget and the variant's model."""
    from configs import cluttered_mnist

    config = cluttered_mnist.get_config(None if variant.depth else "baseline")
    config.dataset.data_dir = os.path.abspath(os.path.join(args.workdir, "data"))
    config.dataset.num_train = args.num_train
    config.dataset.num_validation = args.num_validation
    config.dataset.num_test = args.num_test
    config.dataset.sweep_distractors = SWEEP
    config.num_epochs = args.epochs
    config.schedule.boundaries_epochs = (0.75 * args.epochs,)
    config.log_every_steps = 25
    config.checkpoint_keep = 1
    config.seed = seed
    config.attention.depth = variant.depth
    config.attention.width = variant.width
    config.attention.gates = variant.gates
    config.attention.mask_fn = variant.mask_fn
    if not variant.regularizer:
        config.attention.regularizer_weight = 0.0
    if variant.stn:
        config.model.stn = True
    return config


def run_dir(workdir: str, variant: Variant, seed: int) -> str:
    return os.path.join(workdir, "runs", f"{variant.name}_s{seed}")


def load_run(workdir: str, variant: Variant, seed: int) -> dict[str, Any] | None:
    """The finished run's record (None if it has not finished)."""
    directory = run_dir(workdir, variant, seed)
    summary = os.path.join(directory, SUMMARY_FILE)
    results = os.path.join(directory, "eval_best", "eval_results.json")
    if not (os.path.exists(summary) and os.path.exists(results)):
        return None
    record = json.load(open(summary))
    evaluated = json.load(open(results))
    record["test_accuracy"] = evaluated["accuracy"]
    record["accuracy_vs_distractors"] = evaluated.get("accuracy_vs_distractors", {})
    record["mean_gates"] = evaluated.get("mean_gates", {})
    record["hypothesis_accuracy"] = evaluated.get("hypothesis_accuracy", {})
    return record


def train_run(variant: Variant, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Trains and evaluates one model in its workdir; writes and returns its summary."""
    from wrna_jax.evaluate import evaluate_checkpoint
    from wrna_jax.train import train_and_evaluate

    directory = run_dir(args.workdir, variant, seed)
    config = make_config(variant, seed, args)
    start = time.perf_counter()
    status = "ok"
    try:
        train_and_evaluate(config, directory)
    except FloatingPointError as err:  # a diverged run is a result, not a crash of the study
        status = f"diverged: {err}"
        print(f"  {variant.name} seed {seed} diverged: {err}", flush=True)
    train_seconds = time.perf_counter() - start
    metrics = [json.loads(line) for line in open(os.path.join(directory, "metrics.jsonl")) if line.strip()]
    val = [m["val_accuracy"] for m in metrics if "val_accuracy" in m]
    if not val:
        raise RuntimeError(f"{directory}: training left no validation result ({status}).")
    start = time.perf_counter()
    evaluate_checkpoint(config, directory, "best", "test")
    summary = {"name": variant.name, "seed": seed, "status": status, "val_accuracy": max(val),
               "steps": metrics[-1]["step"], "train_seconds": train_seconds,
               "eval_seconds": time.perf_counter() - start}
    with open(os.path.join(directory, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return load_run(args.workdir, variant, seed)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(variants: Sequence[Variant], records: Mapping[str, Sequence[Mapping[str, Any]]]
              ) -> list[dict[str, Any]]:
    """Per variant: mean and sd over seeds of validation, test and per-D accuracies (fractions)."""
    rows = []
    for variant in variants:
        runs = records.get(variant.name, [])
        if not runs:
            continue
        row: dict[str, Any] = {**dataclasses.asdict(variant), "label": variant.label,
                               "seeds": sorted(r["seed"] for r in runs),
                               "diverged": sum(r.get("status", "ok") != "ok" for r in runs)}
        for key in ("val_accuracy", "test_accuracy"):
            row[key], row[key.replace("accuracy", "sd")] = mean_sd([r[key] for r in runs])
        row["accuracy_vs_distractors"] = {}
        for d in SWEEP:
            values = [r["accuracy_vs_distractors"][str(d)] for r in runs
                      if str(d) in r.get("accuracy_vs_distractors", {})]
            if values:
                row["accuracy_vs_distractors"][str(d)] = dict(zip(("mean", "sd"), mean_sd(values)))
        # The backbone's own classifier inside the model, alone, and the weight the gates give it.
        for key, source in (("backbone_accuracy", "hypothesis_accuracy"), ("backbone_gate", "mean_gates")):
            values = [r[source]["backbone"] for r in runs if "backbone" in r.get(source, {})]
            row[key] = statistics.fmean(values) if values else None
        row["minutes_per_run"] = statistics.fmean(
            (r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0)) / 60 for r in runs)
        rows.append(row)
    return rows


def _pct(mean: float, sd: float) -> str:
    return f"{100 * mean:.2f} ± {100 * sd:.2f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Validation, test (D=8) and per-D test accuracy, mean ± sd over seeds, in %; the test
    accuracy of the backbone's own classifier inside the model and its mean gate weight."""
    header = ("| stage | model | seeds | val acc | test acc (D=8) | "
              + " | ".join(f"D={d}" for d in SWEEP if d != 8) + " | backbone alone | backbone gate | min/run |")
    lines = [header, "|---|---|---:|---:|---:|" + "---:|" * (len(SWEEP) - 1) + "---:|---:|---:|"]
    for row in rows:
        sweep = row["accuracy_vs_distractors"]
        cells = [_pct(sweep[str(d)]["mean"], sweep[str(d)]["sd"]) if str(d) in sweep else ""
                 for d in SWEEP if d != 8]
        alone = "" if row.get("backbone_accuracy") is None else f"{100 * row['backbone_accuracy']:.2f}"
        gate = "" if row.get("backbone_gate") is None else f"{row['backbone_gate']:.2f}"
        seeds = str(len(row["seeds"])) + (f" ({row['diverged']} diverged)" if row["diverged"] else "")
        lines.append(f"| {row['stage']} | {row['label']} | {seeds} | "
                     f"{_pct(row['val_accuracy'], row['val_sd'])} | "
                     f"{_pct(row['test_accuracy'], row['test_sd'])} | " + " | ".join(cells)
                     + f" | {alone} | {gate} | {row['minutes_per_run']:.1f} |")
    return "\n".join(lines) + "\n"


def best(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Mapping[str, Any]:
    """The row with the highest mean validation accuracy among `names`."""
    candidates = [row for row in rows if row["name"] in names]
    if not candidates:
        raise ValueError(f"None of {list(names)} has finished runs.")
    return max(candidates, key=lambda row: row["val_accuracy"])


def _errorbar_plot(ax: Any, xs: Sequence[Any], rows: Sequence[Mapping[str, Any]], label: str,
                   key: str = "test_accuracy", sd_key: str = "test_sd", **kwargs: Any) -> None:
    ax.errorbar(xs, [100 * r[key] for r in rows], yerr=[100 * r[sd_key] for r in rows],
                marker="o", capsize=3, label=label, **kwargs)


def _save(fig: Any, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_depth(rows: Sequence[Mapping[str, Any]], path: str) -> str:
    """Figure 4b: accuracy against AD at AW = 1 (AD = 0 is the baseline CNN)."""
    by_name = {row["name"]: row for row in rows}
    points = [(0, by_name["baseline"])] if "baseline" in by_name else []
    points += [(d, by_name[f"ad{d}_aw1"]) for d in DEPTHS if f"ad{d}_aw1" in by_name]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    xs, selected = [p[0] for p in points], [p[1] for p in points]
    _errorbar_plot(ax, xs, selected, "test (D=8)")
    _errorbar_plot(ax, xs, selected, "validation", "val_accuracy", "val_sd", linestyle="--")
    ax.set_xticks(xs)
    ax.set_xlabel("attention depth AD (AW = 1; 0 = baseline)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_width(rows: Sequence[Mapping[str, Any]], depth: int, path: str) -> str:
    """Figure 4c: accuracy against AW at the best AD (the paper plots training curves)."""
    by_name = {row["name"]: row for row in rows}
    points = [(w, by_name[f"ad{depth}_aw{w}"]) for w in WIDTHS if f"ad{depth}_aw{w}" in by_name]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    xs, selected = [p[0] for p in points], [p[1] for p in points]
    _errorbar_plot(ax, xs, selected, "test (D=8)")
    _errorbar_plot(ax, xs, selected, "validation", "val_accuracy", "val_sd", linestyle="--")
    if "baseline" in by_name:
        ax.axhline(100 * by_name["baseline"]["test_accuracy"], color="gray", linestyle=":",
                   label="baseline test")
    ax.set_xticks(xs)
    ax.set_xlabel(f"attention width AW (AD = {depth})")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_ablations(rows: Sequence[Mapping[str, Any]], names: Sequence[str], path: str) -> str:
    """Figure 4d: the best model against sigmoid masks, no gates and no regulariser (bars)."""
    by_name = {row["name"]: row for row in rows}
    selected = [by_name[n] for n in names if n in by_name]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ys = [100 * r["test_accuracy"] for r in selected]
    ax.bar(range(len(selected)), ys, yerr=[100 * r["test_sd"] for r in selected], capsize=4,
           color=["tab:gray" if not r["depth"] else "tab:blue" for r in selected])
    ax.set_xticks(range(len(selected)))
    ax.set_xticklabels([r["label"].replace(", ", "\n") for r in selected], fontsize=7)
    low = min(y - 100 * r["test_sd"] for y, r in zip(ys, selected))
    high = max(y + 100 * r["test_sd"] for y, r in zip(ys, selected))
    ax.set_ylim(low - 0.5 * (high - low) - 0.2, high + 0.2 * (high - low) + 0.2)
    ax.set_ylabel("test accuracy, D=8 (%)")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_distractors(rows: Sequence[Mapping[str, Any]], names: Sequence[str], path: str) -> str:
    """Figure 4e: test accuracy against D (trained with D = 8), mean ± sd over seeds."""
    by_name = {row["name"]: row for row in rows}
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name in names:
        if name not in by_name:
            continue
        sweep = by_name[name]["accuracy_vs_distractors"]
        ds = [d for d in SWEEP if str(d) in sweep]
        ax.errorbar(ds, [100 * sweep[str(d)]["mean"] for d in ds],
                    yerr=[100 * sweep[str(d)]["sd"] for d in ds], marker="o", capsize=3,
                    label=by_name[name]["label"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(SWEEP), [str(d) for d in SWEEP])
    ax.set_xlabel("number of distractors D")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_results(rows: Sequence[Mapping[str, Any]], out: str, best_depth: int | None,
                  best_width: int | None, ablation_names: Sequence[str], meta: Mapping[str, Any]
                  ) -> dict[str, str]:
    """The table (markdown, JSON) and the four figures in `out`; returns the written paths."""
    os.makedirs(out, exist_ok=True)
    paths = {"table_md": os.path.join(out, "ablation_results.md"),
             "table_json": os.path.join(out, "ablation_results.json")}
    with open(paths["table_md"], "w") as f:
        f.write(markdown_table(rows))
    with open(paths["table_json"], "w") as f:
        json.dump({"meta": dict(meta), "best_depth": best_depth, "best_width": best_width,
                   "rows": list(rows)}, f, indent=2)
    paths["depth"] = plot_depth(rows, os.path.join(out, "accuracy_vs_depth.png"))
    if best_depth is not None:
        paths["width"] = plot_width(rows, best_depth, os.path.join(out, "accuracy_vs_width.png"))
    if best_width is not None and ablation_names:
        reference = [f"ad{best_depth}_aw{best_width}"]
        if best_width == 1:
            reference.append(f"ad{best_depth}_aw2")
        paths["ablations"] = plot_ablations(rows, ["baseline", *reference, *ablation_names],
                                            os.path.join(out, "ablations.png"))
        # Figure 4e: the baseline, the STN, the best AD/AW model and, where another attention
        # variant validates better (an ablation), that one too: the paper's "best model so far".
        curves = ["baseline", "stn", f"ad{best_depth}_aw{best_width}"]
        overall = best(rows, [row["name"] for row in rows if row["depth"]])["name"]
        paths["distractors"] = plot_distractors(rows, list(dict.fromkeys(curves + [overall])),
                                                os.path.join(out, "accuracy_vs_distractors.png"))
    return paths


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
                print(f"  -> val {100 * record['val_accuracy']:.2f}%, test {100 * record['test_accuracy']:.2f}% "
                      f"in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
            records.setdefault(variant.name, []).append(record)


def estimate_run_seconds(args: argparse.Namespace) -> float:
    """Idle-machine estimate: training steps, evaluations and compilation of one run."""
    steps = args.num_train // 128 * args.epochs
    eval_images = args.epochs * args.num_validation + (1 + len(SWEEP)) * args.num_test + 500
    return steps * args.seconds_per_step + eval_images / args.eval_images_per_second + args.overhead_seconds


def main(argv: Sequence[str] | None = None,
         train: Callable[[Variant, int, argparse.Namespace], dict[str, Any]] = train_run) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/ablation")
    parser.add_argument("--docs_dir", default=None, help="also copy the table and figures here")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--num_train", type=int, default=19_200)
    parser.add_argument("--num_validation", type=int, default=2_000)
    parser.add_argument("--num_test", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=1, help="validation after each")
    parser.add_argument("--seconds_per_step", type=float, default=0.28,
                        help="budget estimate only: idle 2-core CPU, batch 128")
    parser.add_argument("--eval_images_per_second", type=float, default=1500.0, help="budget estimate only")
    parser.add_argument("--overhead_seconds", type=float, default=15.0, help="budget estimate only")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.num_train < 128 or args.epochs <= 0 or min(args.num_validation, args.num_test) < 1:
        parser.error("--seeds >= 1, --num_train >= 128 (one batch), --epochs > 0 and positive "
                     "--num_validation/--num_test are required.")
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, exist_ok=True)

    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from benchmarks.common import machine

    seeds = list(range(args.seeds))
    total = NUM_RUN_CONFIGS * len(seeds)
    per_run = estimate_run_seconds(args)
    steps = args.num_train // 128 * args.epochs
    print(f"Machine: {machine()}", flush=True)
    print(f"Budget: {NUM_RUN_CONFIGS} models x {len(seeds)} seeds = {total} runs of {steps} steps "
          f"(batch 128, {args.num_train:,} canvases, {args.epochs} epoch(s), lr 0.1 /10 at 75%), "
          f"eval on {args.num_validation:,} validation and 1 + {len(SWEEP)} (D sweep) x {args.num_test:,} "
          "test canvases; "
          f"about {per_run / 60:.1f} min per run, {total * per_run / 60:.0f} min in all on an idle "
          "2-core CPU (longer when shared).", flush=True)
    progress = Progress(total, per_run)
    records: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()

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
    wall = time.perf_counter() - start
    meta = {"machine": machine(), "wall_seconds_last_invocation": wall,
            # train + eval time of every run, earlier invocations included
            "run_seconds_total": sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0)
                                     for runs in records.values() for r in runs),
            "runs": total, "seeds": seeds, "steps_per_run": steps, "num_train": args.num_train,
            "num_validation": args.num_validation, "num_test": args.num_test, "epochs": args.epochs,
            "selection": "highest mean validation accuracy; test accuracy reported"}
    paths = write_results(rows, os.path.join(args.workdir, "results"), best_depth, best_width,
                          [v.name for v in stage3], meta)
    print(markdown_table(rows))
    print(f"Wall time of this invocation: {wall / 60:.1f} min; sum over runs (including earlier "
          f"invocations): {meta['run_seconds_total'] / 60:.1f} min. Machine: {meta['machine']}")
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
