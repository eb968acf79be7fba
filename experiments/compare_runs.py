"""Accuracy against the number of distractors for several evaluated cluttered-MNIST runs, as
one table and one plot (the paper's Figure 4e).

    python experiments/compare_runs.py attention=runs/cluttered_mnist baseline=runs/baseline \\
        --out runs/compare

Each run must have been evaluated with eval.py (it reads <workdir>/eval_best/eval_results.json).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wrna_jax import plots  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="label=workdir pairs")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--out", required=True, help="directory for the table and the plot")
    args = parser.parse_args()
    curves = {}
    for item in args.runs:
        label, _, workdir = item.rpartition("=")
        path = os.path.join(workdir, f"eval_{args.checkpoint}", "eval_results.json")
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: run eval.py on {workdir} first.")
        with open(path) as f:
            sweep = json.load(f).get("accuracy_vs_distractors")
        if not sweep:
            raise SystemExit(f"{path} has no accuracy_vs_distractors: not a cluttered-MNIST evaluation.")
        curves[label] = {int(d): acc for d, acc in sweep.items()}
    os.makedirs(args.out, exist_ok=True)
    table = plots.distractor_table(curves)
    with open(os.path.join(args.out, "accuracy_vs_distractors.md"), "w") as f:
        f.write(table)
    print(table)
    print(plots.plot_accuracy_vs_distractors(curves, os.path.join(args.out, "accuracy_vs_distractors.png")))


if __name__ == "__main__":
    main()
