"""Accuracy against the number of distractors for several evaluated cluttered-MNIST runs, as
one table and one plot (the paper's Figure 4e).

    python experiments/compare_runs.py attention=runs/cluttered_mnist baseline=runs/baseline \\
        --out runs/compare

A label may name several runs (seeds), comma-separated: `attention=runs/a_s0,runs/a_s1,runs/a_s2`
gives their mean and sample standard deviation (table: mean ± sd; plot: error bars). Each run
must have been evaluated with eval.py (it reads <workdir>/eval_<checkpoint>/eval_results.json).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wrna_jax import plots  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="label=workdir[,workdir...] (several: mean and sd)")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--out", required=True, help="directory for the table and the plot")
    args = parser.parse_args()
    curves, spread = {}, {}
    for item in args.runs:
        label, _, workdirs = item.rpartition("=")
        if not label:
            raise SystemExit(f"{item!r}: give each model as label=workdir[,workdir...].")
        sweeps = [read_sweep(workdir, args.checkpoint) for workdir in workdirs.split(",")]
        ds = sorted(set.intersection(*(set(sweep) for sweep in sweeps)))
        curves[label] = {d: float(np.mean([sweep[d] for sweep in sweeps])) for d in ds}
        if len(sweeps) > 1:
            spread[label] = {d: float(np.std([sweep[d] for sweep in sweeps], ddof=1)) for d in ds}
    os.makedirs(args.out, exist_ok=True)
    table = plots.distractor_table(curves, spread)
    with open(os.path.join(args.out, "accuracy_vs_distractors.md"), "w") as f:
        f.write(table)
    print(table)
    print(plots.plot_accuracy_vs_distractors(curves, os.path.join(args.out, "accuracy_vs_distractors.png"), spread))


def read_sweep(workdir: str, checkpoint: str) -> dict[int, float]:
    """{D: test accuracy} of one evaluated run."""
    path = os.path.join(workdir, f"eval_{checkpoint}", "eval_results.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run eval.py on {workdir} first.")
    with open(path) as f:
        sweep = json.load(f).get("accuracy_vs_distractors")
    if not sweep:
        raise SystemExit(f"{path} has no accuracy_vs_distractors: not a cluttered-MNIST evaluation.")
    return {int(d): acc for d, acc in sweep.items()}


if __name__ == "__main__":
    main()
