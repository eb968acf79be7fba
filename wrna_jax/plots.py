"""PNG figures: attention masks over their inputs (paper Fig. 3), accuracy against the number
of distractors (Fig. 4e) and training curves. Uses matplotlib's non-interactive backend."""

import json
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """matplotlib's `subplots` on the non-interactive backend."""
    return plt.subplots(*args, **kwargs)


def save(fig: Any, path: str, dpi: int = 100) -> str:
    """Lays out, writes and closes `fig`; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w) mask to the image's (H, W), normalised to [0, 1]."""
    rows = np.minimum((np.arange(size[0]) * mask.shape[0]) // size[0], mask.shape[0] - 1)
    cols = np.minimum((np.arange(size[1]) * mask.shape[1]) // size[1], mask.shape[1] - 1)
    up = mask[rows][:, cols]
    return (up - up.min()) / (up.max() - up.min() + 1e-12)


def _display(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32)
    image = (image - image.min()) / (image.max() - image.min() + 1e-12)
    return image[..., 0] if image.shape[-1] == 1 else image


def _overlay(ax: Any, shown: np.ndarray, mask: np.ndarray) -> None:
    """The image with the mask over it: plasma colours (bright yellow at the peak, visible on dark
    canvases and on photos) whose opacity grows with the mask (scaled to [0, 1] per image), so
    the image stays visible where the module does not attend."""
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
    up = _upsample(mask, shown.shape[:2])
    colours = plt.get_cmap("plasma")(up)
    colours[..., 3] = 0.7 * up
    ax.imshow(colours)


def plot_attention_masks(images: np.ndarray, masks: Mapping[str, np.ndarray], labels: np.ndarray | None,
                         predictions: np.ndarray, path: str, class_names: Sequence[str] | None = None) -> str:
    """One row per image: the input, then each module's heads over it (`_overlay`); titles name
    the label (when given) and the prediction, by `class_names` when given."""
    columns = [(name, k) for name, m in masks.items() for k in range(m.shape[-1])]
    def name_of(c: Any) -> str:  # long fine-grained names are cut to fit the column
        name = class_names[int(c)] if class_names is not None else str(int(c))
        return name if len(name) <= 24 else name[:23] + "…"

    rows = len(images)
    fig, axes = subplots(rows, 1 + len(columns), figsize=(1.6 * (1 + len(columns)), 1.7 * rows),
                             squeeze=False)
    for i in range(rows):
        shown = _display(images[i])
        axes[i, 0].imshow(shown, cmap="gray" if shown.ndim == 2 else None)
        title = f"pred: {name_of(predictions[i])}"
        axes[i, 0].set_title(title if labels is None else f"label: {name_of(labels[i])}\n{title}", fontsize=6)
        for j, (name, k) in enumerate(columns, start=1):
            _overlay(axes[i, j], shown, masks[name][i, ..., k])
            if i == 0:
                axes[i, j].set_title(f"{name} head {k}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    return save(fig, path, dpi=100)


def plot_confusion_matrix(confusion: np.ndarray, names: Sequence[str], path: str) -> str:
    """The confusion matrix normalised per true class (row), viridis on [0, 1]; class names on
    the axes up to 40 classes (beyond that the indices every few classes)."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(names)
    side = min(4 + 0.22 * n, 16)
    fig, ax = subplots(figsize=(side + 1, side))
    image = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(n) if n <= 40 else np.arange(0, n, max(1, n // 20))
    labels = [names[t] for t in ticks] if n <= 40 else [str(t) for t in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7 if n <= 40 else 6)
    ax.set_yticks(ticks, labels, fontsize=7 if n <= 40 else 6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return save(fig, path, dpi=110)


def plot_accuracy_vs_distractors(curves: Mapping[str, Mapping[int, float]], path: str,
                                 spread: Mapping[str, Mapping[int, float]] | None = None) -> str:
    """Test accuracy against the number of distractors D, one line per model (error bars of one
    standard deviation where `spread` gives them)."""
    fig, ax = subplots(figsize=(4.5, 3.2))
    for label, curve in curves.items():
        ds = sorted(curve)
        sd = (spread or {}).get(label)
        ax.errorbar(ds, [100 * curve[d] for d in ds], yerr=[100 * sd[d] for d in ds] if sd else None,
                    marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("number of distractors D")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path, dpi=120)


def distractor_table(curves: Mapping[str, Mapping[int, float]],
                     spread: Mapping[str, Mapping[int, float]] | None = None) -> str:
    """The same data as `plot_accuracy_vs_distractors`, as a markdown table (accuracy %, with
    ` ± sd` where `spread` gives a standard deviation)."""
    ds = sorted({d for curve in curves.values() for d in curve})
    lines = ["| model | " + " | ".join(f"D={d}" for d in ds) + " |",
             "|---|" + "---:|" * len(ds)]
    for label, curve in curves.items():
        sd = (spread or {}).get(label, {})
        cells = [f"{100 * curve[d]:.2f}" + (f" ± {100 * sd[d]:.2f}" if d in sd else "") if d in curve else ""
                 for d in ds]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_training_curves(metrics_path: str, path: str,
                         keys: Sequence[str] = ("train_loss", "train_accuracy", "val_accuracy")) -> str:
    """Curves of the JSON-lines metrics file written during training, against the step."""
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    present = [k for k in keys if any(k in r for r in records)]
    fig, axes = subplots(1, len(present), figsize=(4 * len(present), 3), squeeze=False)
    for ax, key in zip(axes[0], present):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    return os.path.abspath(save(fig, path, dpi=110))
