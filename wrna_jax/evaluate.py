"""Evaluation: whole splits (padded and masked, nothing dropped), per-hypothesis accuracy,
mean gate weights, and the `eval.py` entry point with its figures."""

import functools
import json
import os
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from wrna_jax import checkpoint, distributed, parallel, plots, state as state_lib
from wrna_jax.data import datasets, pipeline
from wrna_jax.models import ModelOutput, create_model


def multi_crop_output(model: Any, variables: Any, images: jax.Array) -> ModelOutput:
    """The model on (B, H, W, C) images, or on (B, crops, H, W, C) with ten-crop evaluation:
    then log-probabilities, hypotheses' log-probabilities and gates are averaged over the crops,
    and the masks are those of the centre crop (index 4)."""
    if images.ndim == 4:
        return model.apply(variables, images, train=False)
    crops = images.shape[1]
    out = model.apply(variables, images.reshape(-1, *images.shape[2:]), train=False)
    per_crop = lambda a: a.reshape(-1, crops, *a.shape[1:])
    return out.replace(
        log_probs=per_crop(out.log_probs).mean(axis=1),
        hypotheses=per_crop(jax.nn.log_softmax(out.hypotheses, axis=-1)).mean(axis=1),
        gates=per_crop(out.gates).mean(axis=1),
        masks={name: per_crop(m)[:, min(4, crops - 1)] for name, m in out.masks.items()})


def eval_step(state: Any, batch: Mapping[str, jax.Array], *, model: Any) -> tuple[dict, ModelOutput]:
    """Masked sums over one batch; padding examples (mask False) count nowhere."""
    out = multi_crop_output(model, {"params": state.params, "batch_stats": state.batch_stats},
                            batch["image"])
    labels, mask = batch["label"], batch["mask"].astype(jnp.float32)
    top5 = jax.lax.top_k(out.log_probs, min(5, out.log_probs.shape[-1]))[1]
    sums = {
        "count": jnp.sum(mask),
        "correct": jnp.sum((jnp.argmax(out.log_probs, -1) == labels) * mask),
        "correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
        "nll": -jnp.sum(jnp.take_along_axis(out.log_probs, labels[:, None], axis=1)[:, 0] * mask),
        "hypothesis_correct": jnp.sum((jnp.argmax(out.hypotheses, -1) == labels[:, None])
                                      * mask[:, None], axis=0),
        "gate_sum": jnp.sum(out.gates * mask[:, None], axis=0),
    }
    return sums, out


def make_eval_step(model: Any, mesh: jax.sharding.Mesh):
    """`eval_step` compiled for the mesh: batch sharded, state and sums replicated."""
    return jax.jit(functools.partial(eval_step, model=model),
                   in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))


def evaluate_batches(step_fn: Any, state: Any, batches: Iterable[Mapping[str, jax.Array]],
                     hypothesis_names: tuple[str, ...], num_classes: int) -> dict[str, Any]:
    """Runs `step_fn` over every batch and turns the sums into metrics."""
    totals = None
    for batch in batches:
        sums, _ = step_fn(state, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("The evaluation split yielded no batches.")
    totals = jax.device_get(totals)
    count = float(totals["count"])
    metrics: dict[str, Any] = {
        "num_examples": int(count),
        "accuracy": float(totals["correct"]) / count,
        "loss": float(totals["nll"]) / count,
        "hypothesis_accuracy": {name: float(c) / count for name, c in
                                zip(hypothesis_names, totals["hypothesis_correct"])},
        "mean_gates": {name: float(g) / count for name, g in zip(hypothesis_names, totals["gate_sum"])},
    }
    if num_classes > 5:
        metrics["top5_accuracy"] = float(totals["correct_top5"]) / count
    return metrics


def eval_batches(builder: Any, split: str, config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh, ten_crop: bool | None = None) -> Iterable[dict[str, jax.Array]]:
    """The whole `split` of this process, padded to full global batches, on the mesh.

    `ten_crop` overrides config.dataset.ten_crop (validation during training uses one crop)."""
    local_batch = parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    ds = pipeline.create_split(
        builder, split, local_batch, train=False, seed=config.seed,
        preprocess_fn=datasets.preprocess_fn(config.dataset, train=False, ten_crop=ten_crop),
        process_index=jax.process_index(), process_count=jax.process_count(),
        pad_last_batch=True, cache=False)
    return parallel.prefetch_to_mesh(pipeline.as_numpy_batches(ds), parallel.batch_sharding(mesh))


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, which: str = "best",
                        split: str = "test", output_dir: str | None = None) -> dict[str, Any]:
    """eval.py: restore a checkpoint, evaluate `split`, write eval_results.json and figures."""
    model = create_model(config)
    checkpoint.check_compatible(workdir, config)
    ckpts = checkpoint.Checkpoints(workdir, keep=max(1, int(config.checkpoint_keep)))
    step = ckpts.resolve(which)
    mesh = parallel.create_mesh(config.num_devices)
    with distributed.process_0_first("preparing the dataset"):
        builder = datasets.get_builder(config.dataset)
    if split not in builder.info.splits:
        raise ValueError(f"--split={split!r}: the dataset has splits {sorted(builder.info.splits)}.")
    state = state_lib.create_train_state(config, model, datasets.input_shape(config.dataset, builder), mesh,
                                         steps_per_epoch=1)
    state = ckpts.restore(step, state)
    step_fn = make_eval_step(model, mesh)
    names = model.hypothesis_names
    results: dict[str, Any] = {"checkpoint_step": step, "split": split,
                               **evaluate_batches(step_fn, state, eval_batches(builder, split, config, mesh),
                                                  names, config.model.num_classes)}
    logging.info("Step %d, %s: accuracy %.4f", step, split, results["accuracy"])
    output_dir = output_dir or os.path.join(workdir, f"eval_{which}")
    if jax.process_index() == 0:
        os.makedirs(output_dir, exist_ok=True)
    figures = {}
    if config.dataset.name == "cluttered_mnist" and config.dataset.get("sweep_distractors"):
        sweep = {}
        for d in config.dataset.sweep_distractors:
            with distributed.process_0_first(f"preparing the D={d} test set"):
                sweep_builder = datasets.cluttered_mnist_builder(config.dataset, num_distractors=int(d),
                                                                 num_train=1, num_validation=1)
            sweep[int(d)] = evaluate_batches(step_fn, state, eval_batches(sweep_builder, "test", config, mesh),
                                             names, config.model.num_classes)["accuracy"]
            logging.info("D=%d: test accuracy %.4f", d, sweep[int(d)])
        results["accuracy_vs_distractors"] = {str(d): acc for d, acc in sweep.items()}
        if jax.process_index() == 0:
            figures["accuracy_vs_distractors"] = plots.plot_accuracy_vs_distractors(
                {"model": sweep}, os.path.join(output_dir, "accuracy_vs_distractors.png"))
            table = plots.distractor_table({"model": sweep})
            with open(os.path.join(output_dir, "accuracy_vs_distractors.md"), "w") as f:
                f.write(table)
            print(table)
    # The step is one global computation, so every process runs it; the first examples are
    # replicated (a small copy, readable on every process) and process 0 draws them.
    batch = next(iter(eval_batches(builder, split, config, mesh)))
    _, out = step_fn(state, batch)
    first = jax.jit(lambda tree: jax.tree.map(lambda a: a[:int(config.num_mask_examples)], tree),
                    out_shardings=parallel.replicated(mesh))
    shown = jax.device_get(first({"image": batch["image"], "label": batch["label"], "mask": batch["mask"],
                                  "log_probs": out.log_probs, "masks": out.masks}))
    if jax.process_index() == 0:
        count = min(int(config.num_mask_examples), int(np.sum(shown["mask"])))
        masks = {name: np.asarray(m)[:count] for name, m in shown["masks"].items()}
        images = np.asarray(shown["image"])[:count]
        if images.ndim == 5:
            images = images[:, min(4, images.shape[1] - 1)]
        if masks:
            figures["attention_masks"] = plots.plot_attention_masks(
                images, masks, np.asarray(shown["label"])[:count],
                np.asarray(shown["log_probs"]).argmax(-1)[:count],
                os.path.join(output_dir, "attention_masks.png"))
        results["figures"] = figures
        with open(os.path.join(output_dir, "eval_results.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results
