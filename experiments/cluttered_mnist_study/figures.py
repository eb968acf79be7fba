"""The study's figures (Figure 4b-e analogues): accuracy against AD and AW, the ablations, and
accuracy against the number of distractors, mean +- sd over seeds."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from experiments.cluttered_mnist_study.plan import DEPTHS, SWEEP, WIDTHS
from wrna_jax import plots


def _errorbar(ax: Any, xs: Sequence[Any], rows: Sequence[Mapping[str, Any]], label: str,
              key: str = "test_accuracy", sd_key: str = "test_sd", **kwargs: Any) -> None:
    ax.errorbar(xs, [100 * r[key] for r in rows], yerr=[100 * r[sd_key] for r in rows],
                marker="o", capsize=3, label=label, **kwargs)


def plot_depth(rows: Sequence[Mapping[str, Any]], path: str) -> str:
    """Figure 4b: accuracy against AD at AW = 1 (AD = 0 is the baseline CNN)."""
    by_name = {row["name"]: row for row in rows}
    points = [(0, by_name["baseline"])] if "baseline" in by_name else []
    points += [(d, by_name[f"ad{d}_aw1"]) for d in DEPTHS if f"ad{d}_aw1" in by_name]
    fig, ax = plots.subplots(figsize=(4.5, 3.2))
    xs, selected = [p[0] for p in points], [p[1] for p in points]
    _errorbar(ax, xs, selected, "test (D=8)")
    _errorbar(ax, xs, selected, "validation", "val_accuracy", "val_sd", linestyle="--")
    ax.set_xticks(xs)
    ax.set_xlabel("attention depth AD (AW = 1; 0 = baseline)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return plots.save(fig, path, dpi=100)


def plot_width(rows: Sequence[Mapping[str, Any]], depth: int, path: str) -> str:
    """Figure 4c: accuracy against AW at the best AD (the paper plots training curves)."""
    by_name = {row["name"]: row for row in rows}
    points = [(w, by_name[f"ad{depth}_aw{w}"]) for w in WIDTHS if f"ad{depth}_aw{w}" in by_name]
    fig, ax = plots.subplots(figsize=(4.5, 3.2))
    xs, selected = [p[0] for p in points], [p[1] for p in points]
    _errorbar(ax, xs, selected, "test (D=8)")
    _errorbar(ax, xs, selected, "validation", "val_accuracy", "val_sd", linestyle="--")
    if "baseline" in by_name:
        ax.axhline(100 * by_name["baseline"]["test_accuracy"], color="gray", linestyle=":",
                   label="baseline test")
    ax.set_xticks(xs)
    ax.set_xlabel(f"attention width AW (AD = {depth})")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return plots.save(fig, path, dpi=100)


def plot_ablations(rows: Sequence[Mapping[str, Any]], names: Sequence[str], path: str) -> str:
    """Figure 4d: the best model against sigmoid masks, no gates and no regulariser (bars)."""
    by_name = {row["name"]: row for row in rows}
    selected = [by_name[n] for n in names if n in by_name]
    fig, ax = plots.subplots(figsize=(5.5, 3.4))
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
    return plots.save(fig, path, dpi=100)


def plot_distractors(rows: Sequence[Mapping[str, Any]], names: Sequence[str], path: str) -> str:
    """Figure 4e: test accuracy against D (trained with D = 8), mean ± sd over seeds."""
    by_name = {row["name"]: row for row in rows}
    fig, ax = plots.subplots(figsize=(4.5, 3.2))
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
    return plots.save(fig, path, dpi=100)


