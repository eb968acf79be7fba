"""`metrics.jsonl`: one JSON line {"step": ..., name: value, ...} per write of scalars, for
scripts and plots (`plots.plot_training_curves`), its repair on resume and the best/last
selection. Plain Python."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

METRICS_FILE = "metrics.jsonl"


def append(path: str, step: int, scalars: Mapping[str, Any]) -> None:
    """Appends one line: the step and every scalar as a float."""
    with open(path, "a") as f:
        f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")


def truncate_after(path: str, step: int) -> int:
    """Drops the lines of `path` logged after `step` and a line cut short; returns how many."""
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step and line.endswith("\n"):
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by a kill
    if len(kept) < len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
    return len(lines) - len(kept)


def selection(path: str) -> dict[str, float | int] | None:
    """The best and the last validation accuracy logged in `path` (the best checkpoint's and the
    last epoch's: report both) with their steps; None before the first validation."""
    with open(path) as f:
        validations = [(r["step"], r["val_accuracy"]) for r in map(json.loads, filter(str.strip, f))
                       if "val_accuracy" in r]
    if not validations:
        return None
    best_step, best = max(validations, key=lambda v: (v[1], v[0]))  # the later of equals, as the checkpoints
    last_step, last = validations[-1]
    return {"best_val_accuracy": best, "best_step": best_step, "last_val_accuracy": last, "last_step": last_step}


def describe_selection(summary: Mapping[str, Any], split: str) -> str:
    """One line for the end of training."""
    return (f"Validation ({split}): best {summary['best_val_accuracy']:.4f} at step {summary['best_step']}, "
            f"last {summary['last_val_accuracy']:.4f} at step {summary['last_step']}. Test accuracy of both: "
            "eval.py --checkpoint=best and --checkpoint=latest.")
