"""The plan of the cluttered-MNIST study (paper section 4.1, Figure 4b-e): the models, their
configs and the files of a run; `run.py` drives it, `report.py` summarises it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import time
from typing import Any

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


def variant_named(name: str) -> Variant:
    """The variant a name of this plan stands for: 'baseline', 'stn' or
    ad<D>_aw<W>[_sigmoid][_nogates][_noreg] (the stage is 'comparison')."""
    if name in ("baseline", "stn"):
        return dataclasses.replace(BASELINE if name == "baseline" else STN, stage="comparison")
    match = re.fullmatch(r"ad([1-9][0-9]*)_aw([1-9][0-9]*)((?:_sigmoid)?)((?:_nogates)?)((?:_noreg)?)", name)
    if not match:
        raise ValueError(f"model {name!r}: use 'baseline', 'stn' or ad<D>_aw<W> with optional _sigmoid, "
                         "_nogates, _noreg (in that order), e.g. ad4_aw2 or ad3_aw1_nogates.")
    changes = {key: value for key, value, tag in (("mask_fn", "sigmoid", match[3]), ("gates", False, match[4]),
                                                   ("regularizer", False, match[5])) if tag}
    return attention(int(match[1]), int(match[2]), "comparison", **changes)


def make_config(variant: Variant, seed: int, args: argparse.Namespace) -> Any:
    """configs/cluttered_mnist.py (`:paper_data` with `args.paper_data`) with the study's budget
    and the variant's model; split sizes left None by `args` keep the config's."""
    from configs import cluttered_mnist

    options = [] if variant.depth else ["baseline"]
    if getattr(args, "paper_data", False):
        options.append("paper_data")
    config = cluttered_mnist.get_config(",".join(options) or None)
    config.dataset.data_dir = os.path.abspath(os.path.join(args.workdir, "data"))
    sizes = {"num_train": args.num_train, "num_validation": args.num_validation, "num_test": args.num_test}
    config.dataset.cluttered_mnist.update({k: v for k, v in sizes.items() if v is not None})
    if getattr(args, "mnist_dir", None):
        config.dataset.cluttered_mnist.mnist_dir = os.path.abspath(args.mnist_dir)
    config.evals.distractor_sweep.distractors = SWEEP
    config.num_epochs = args.epochs
    config.schedule.boundaries_epochs = (0.75 * args.epochs,)
    config.log_every_steps = 25
    config.checkpoint_keep = 1
    config.seed = seed
    config.input.feed = {"device": "device", "tfds": "host"}[getattr(args, "input", "device")]
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
    if not os.path.exists(summary):
        return None
    with open(summary) as f:
        record = json.load(f)
    if record.get("test_accuracy", 0) is None:  # diverged before its first checkpoint
        return record
    if not os.path.exists(results):
        return None
    with open(results) as f:
        evaluated = json.load(f)
    record["test_accuracy"] = evaluated["accuracy"]
    record["accuracy_vs_distractors"] = evaluated.get("accuracy_vs_distractors", {})
    record["mean_gates"] = evaluated.get("mean_gates", {})
    record["hypothesis_accuracy"] = evaluated.get("hypothesis_accuracy", {})
    return record


def train_run(variant: Variant, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Trains (train.py's loop, on `args.input`'s feed) and evaluates (eval.py's, with the
    distractor sweep) one model in its workdir; writes and returns its summary."""
    from wrna_jax import checkpoint
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
    if status != "ok" and not checkpoint.has_checkpoints(directory):
        return _diverged_before_a_checkpoint(directory, variant, seed, status, train_seconds)
    start = time.perf_counter()
    evaluate_checkpoint(config, directory, "best", "test")
    return _summarise_run(directory, variant, seed, status, train_seconds, time.perf_counter() - start, args)


def _diverged_before_a_checkpoint(directory: str, variant: Variant, seed: int, status: str,
                                  train_seconds: float) -> dict[str, Any]:
    """The record of a run that diverged before its first validation: no accuracy to report
    (the table counts it as diverged and averages the others)."""
    record = {"name": variant.name, "seed": seed, "status": status, "val_accuracy": None, "test_accuracy": None,
              "steps": 0, "train_seconds": train_seconds, "eval_seconds": 0.0}
    with open(os.path.join(directory, SUMMARY_FILE), "w") as f:
        json.dump(record, f, indent=2)
    return record


def _summarise_run(directory: str, variant: Variant, seed: int, status: str, train_seconds: float,
                   eval_seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """Writes the run's summary (best validation accuracy from metrics.jsonl) and returns its record."""
    with open(os.path.join(directory, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    val = [m["val_accuracy"] for m in metrics if "val_accuracy" in m]
    if not val:
        raise RuntimeError(f"{directory}: training left no validation result ({status}).")
    summary = {"name": variant.name, "seed": seed, "status": status, "val_accuracy": max(val),
               "last_val_accuracy": val[-1], "steps": metrics[-1]["step"], "train_seconds": train_seconds,
               "eval_seconds": eval_seconds}
    with open(os.path.join(directory, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    return load_run(args.workdir, variant, seed)
