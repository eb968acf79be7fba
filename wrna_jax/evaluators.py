"""Evaluators that eval.py runs after the split's metrics, as `config.evals` asks: a mapping from
an evaluator's name to its settings (big_vision's `config.evals` idea), e.g.

    config.evals = {"attention_masks": {"examples": 8}, "distractor_sweep": {"distractors": (4, 8, 16)}}

An evaluator is `fn(context, settings) -> dict` of results to add to eval_results.json (a
'figures' entry maps figure names to the PNG files it wrote); `register_evaluator` adds one.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import logging

from wrna_jax import distributed, feeds, parallel, plots
from wrna_jax.metrics import run_evaluation
from wrna_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Context:
    """What an evaluator may use: the run's config, model and mesh, the evaluated dataset and
    split, the restored variables, the compiled eval step and where to write."""

    config: Any
    model: Any
    mesh: jax.sharding.Mesh
    data: feeds.Feed
    split: str
    variables: Any
    step_fn: Any
    output_dir: str
    results: Mapping[str, Any]  # the split's metrics (metrics.metrics_from_sums)


Evaluator = Callable[[Context, Mapping[str, Any]], dict[str, Any]]
EVALUATORS: Registry[Evaluator] = Registry("config.evals entry")


def register_evaluator(name: str) -> Callable[[Evaluator], Evaluator]:
    """Decorator registering `fn(context, settings) -> results` as the evaluator `name`."""
    return lambda fn: EVALUATORS.add(name, fn)


def evaluator(name: str) -> Evaluator:
    return EVALUATORS[name]


@register_evaluator("attention_masks")
def attention_masks(context: Context, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The attention masks of every module and head over the first `examples` images of the
    split (the paper's Figure 3): attention_masks.png."""
    count = int(settings["examples"])
    batch = next(iter(context.data.eval_batches(context.split, context.config, context.mesh)))
    _, out = context.step_fn(context.variables, batch)
    # The step is one global computation, so every process runs it; the first examples are
    # replicated (a small copy, readable on every process) and process 0 draws them.
    first = jax.jit(lambda tree: jax.tree.map(lambda a: a[:count], tree),
                    out_shardings=parallel.replicated(context.mesh))
    shown = jax.device_get(first({"image": batch["image"], "label": batch["label"], "mask": batch["mask"],
                                  "log_probs": out.log_probs, "masks": out.masks}))
    if jax.process_index() != 0 or not shown["masks"]:
        return {}
    count = min(count, int(np.sum(shown["mask"])))
    images = np.asarray(shown["image"])[:count]
    if images.ndim == 5:  # ten crops: the centre one
        images = images[:, min(4, images.shape[1] - 1)]
    path = plots.plot_attention_masks(
        images, {name: np.asarray(m)[:count] for name, m in shown["masks"].items()},
        np.asarray(shown["label"])[:count], np.asarray(shown["log_probs"]).argmax(-1)[:count],
        os.path.join(context.output_dir, "attention_masks.png"), class_names=context.data.class_names())
    return {"figures": {"attention_masks": path}}


@register_evaluator("distractor_sweep")
def distractor_sweep(context: Context, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Cluttered MNIST: test accuracy against the number of distractors D (the paper's Figure 4e),
    on test sets generated for each D with the run's data settings: accuracy_vs_distractors.{md,png}.
    An empty `distractors` skips it (the command line cannot delete a config entry), writing
    nothing."""
    if not settings["distractors"]:
        return {"skipped": {"distractor_sweep": "config.evals.distractor_sweep.distractors is empty"}}
    sweep = {}
    for d in settings["distractors"]:
        with distributed.process_0_first(f"preparing the D={d} test set"):
            data = feeds.create_feed(context.config, context.mesh, ("test",), kind=context.data.kind,
                                     announce=logging.info, num_distractors=int(d), num_train=1, num_validation=1)
        sweep[int(d)] = run_evaluation(context.step_fn, context.variables,
                                       data.eval_batches("test", context.config, context.mesh),
                                       context.model.hypothesis_names, context.model.num_classes)["accuracy"]
        logging.info("D=%d: test accuracy %.4f", d, sweep[int(d)])
    results: dict[str, Any] = {"accuracy_vs_distractors": {str(d): acc for d, acc in sweep.items()}}
    if jax.process_index() == 0:
        results["figures"] = {"accuracy_vs_distractors": plots.plot_accuracy_vs_distractors(
            {"model": sweep}, os.path.join(context.output_dir, "accuracy_vs_distractors.png"))}
        table = plots.distractor_table({"model": sweep})
        with open(os.path.join(context.output_dir, "accuracy_vs_distractors.md"), "w") as f:
            f.write(table)
        results["accuracy_vs_distractors_md"] = f.name
    return results


@register_evaluator("per_class")
def per_class(context: Context, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Per-class accuracy (per_class_accuracy.csv), the confusion matrix normalised per true
    class (confusion_matrix.png) and the `most_confused` most frequent (true, predicted) pairs
    of different classes (most_confused.md), from the split's confusion counts, with the
    dataset's label names."""
    confusion = np.asarray(context.results["confusion"], np.int64)
    names = context.data.class_names()
    support = confusion.sum(axis=1)
    correct = np.diag(confusion)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:int(settings["most_confused"])]
    pairs = [{"true": names[i], "predicted": names[j], "count": int(off[i, j]),
              "fraction_of_true_class": float(off[i, j] / support[i])}
             for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]
    if jax.process_index() != 0:
        return {"most_confused": pairs}
    out = context.output_dir
    with open(os.path.join(out, "per_class_accuracy.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "name", "examples", "correct", "accuracy"])
        for c, name in enumerate(names):
            writer.writerow([c, name, int(support[c]), int(correct[c]),
                             f"{correct[c] / support[c]:.6f}" if support[c] else ""])
    lines = ["| true class | predicted as | examples | share of the true class |", "|---|---|---:|---:|"]
    lines += [f"| {p['true']} | {p['predicted']} | {p['count']} | {100 * p['fraction_of_true_class']:.1f}% |"
              for p in pairs]
    with open(os.path.join(out, "most_confused.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    figure = plots.plot_confusion_matrix(confusion, names, os.path.join(out, "confusion_matrix.png"))
    return {"most_confused": pairs, "figures": {"confusion_matrix": figure},
            "per_class_accuracy_csv": os.path.join(out, "per_class_accuracy.csv"),
            "most_confused_md": os.path.join(out, "most_confused.md")}
