"""The study's summary: mean and spread over seeds per model, the markdown and JSON tables, and
the Figure 4b-e analogues (`figures.py`)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Any, Mapping, Sequence

from experiments.cluttered_mnist_study import figures
from experiments.cluttered_mnist_study.plan import SWEEP, Variant

def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(variants: Sequence[Variant], records: Mapping[str, Sequence[Mapping[str, Any]]]
              ) -> list[dict[str, Any]]:
    """Per variant: mean and sd over seeds of validation, test and per-D accuracies (fractions)."""
    rows = []
    for variant in variants:
        every = records.get(variant.name, [])
        runs = [r for r in every if r.get("test_accuracy") is not None]  # some diverged before a checkpoint
        if not runs:
            continue
        row: dict[str, Any] = {**dataclasses.asdict(variant), "label": variant.label,
                               "seeds": sorted(r["seed"] for r in runs),
                               "diverged": sum(r.get("status", "ok") != "ok" for r in every)}
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


def _write_tables(rows: Sequence[Mapping[str, Any]], out: str, stem: str, header: Mapping[str, Any]) -> dict[str, str]:
    """<out>/<stem>.md (the markdown table) and <stem>.json (`header` and the rows)."""
    os.makedirs(out, exist_ok=True)
    paths = {"table_md": os.path.join(out, f"{stem}.md"), "table_json": os.path.join(out, f"{stem}.json")}
    with open(paths["table_md"], "w") as f:
        f.write(markdown_table(rows))
    with open(paths["table_json"], "w") as f:
        json.dump({**header, "rows": list(rows)}, f, indent=2)
    return paths


def write_results(rows: Sequence[Mapping[str, Any]], out: str, best_depth: int | None,
                  best_width: int | None, ablation_names: Sequence[str], meta: Mapping[str, Any]
                  ) -> dict[str, str]:
    """The table (markdown, JSON) and the four figures in `out`; returns the written paths."""
    paths = _write_tables(rows, out, "ablation_results", {"meta": dict(meta), "best_depth": best_depth,
                                                           "best_width": best_width})
    paths["depth"] = figures.plot_depth(rows, os.path.join(out, "accuracy_vs_depth.png"))
    if best_depth is not None:
        paths["width"] = figures.plot_width(rows, best_depth, os.path.join(out, "accuracy_vs_width.png"))
    if best_width is not None and ablation_names:
        reference = [f"ad{best_depth}_aw{best_width}"]
        if best_width == 1:
            reference.append(f"ad{best_depth}_aw2")
        paths["ablations"] = figures.plot_ablations(rows, ["baseline", *reference, *ablation_names],
                                            os.path.join(out, "ablations.png"))
        # Figure 4e: the baseline, the STN, the best AD/AW model and, where another attention
        # variant validates better (an ablation), that one too: the paper's "best model so far".
        curves = ["baseline", "stn", f"ad{best_depth}_aw{best_width}"]
        overall = best(rows, [row["name"] for row in rows if row["depth"]])["name"]
        paths["distractors"] = figures.plot_distractors(rows, list(dict.fromkeys(curves + [overall])),
                                                os.path.join(out, "accuracy_vs_distractors.png"))
    return paths


def write_comparison(rows: Sequence[Mapping[str, Any]], out: str, meta: Mapping[str, Any]) -> dict[str, str]:
    """`--models` runs: the table (markdown, JSON) and accuracy against D of every model."""
    paths = _write_tables(rows, out, "comparison_results", {"meta": dict(meta)})
    paths["distractors"] = figures.plot_distractors(rows, [row["name"] for row in rows],
                                                    os.path.join(out, "comparison_vs_distractors.png"))
    return paths
