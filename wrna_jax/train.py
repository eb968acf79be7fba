"""`train_and_evaluate(config, workdir)`: data-parallel training with evaluation, checkpoints
and automatic resume from the workdir.

The step is a pure function `train_step(state, batch) -> (state, metrics)` (wrna_jax/steps.py)
compiled once for a 1-D device mesh (batch sharded, state replicated, state buffers donated).
Metrics stay on the devices between logging steps, so the loop never waits for the host.
"""

import json
import math
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from tqdm import tqdm

from wrna_jax import checkpoint, distributed, evaluate, parallel, plots
from wrna_jax.data.input import create_input
from wrna_jax.data.registry import dataset_spec
from wrna_jax.models import create_model
from wrna_jax.state import create_train_state
from wrna_jax.steps import check_grad_accum, make_train_step
from wrna_jax.weights import pretrained


class JsonlWriter(metric_writers.MetricWriter):
    """A clu metric writer appending every scalar write to `metrics.jsonl` as one JSON line
    {"step": ..., name: value, ...}; everything but scalars is TensorBoard's alone."""

    def __init__(self, path: str):
        self.path = path

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")

    def write_summaries(self, step, values, metadata=None): pass  # noqa: E704
    def write_images(self, step, images): pass  # noqa: E704
    def write_videos(self, step, videos): pass  # noqa: E704
    def write_audios(self, step, audios, *, sample_rate): pass  # noqa: E704
    def write_texts(self, step, texts): pass  # noqa: E704
    def write_histograms(self, step, arrays, num_buckets=None): pass  # noqa: E704
    def write_hparams(self, hparams): pass  # noqa: E704
    def flush(self): pass  # noqa: E704
    def close(self): pass  # noqa: E704


def metric_writer(workdir: str) -> metric_writers.MetricWriter:
    """Process 0: TensorBoard events (clu's default writer) and metrics.jsonl; the other
    processes log only."""
    if jax.process_index() != 0:
        return metric_writers.create_default_writer(workdir, just_logging=True)
    return metric_writers.MultiWriter([metric_writers.create_default_writer(workdir),
                                       JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


def _check_finite(fetched: list[dict[str, Any]]) -> None:
    """Raises on the first non-finite loss among fetched step metrics (train_step leaves the
    state of such a step unchanged and reports its step)."""
    bad = [int(m["nonfinite"]) for m in fetched if int(m["nonfinite"]) >= 0]
    if bad:
        raise FloatingPointError(f"The loss became NaN or infinite at step {bad[0] + 1}; training stopped "
                                 "without saving that state. Lower optimizer.learning_rate or check the "
                                 "input data; the last good checkpoint in the workdir is kept.")


def _summarise(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Means of the step metrics since the last log; raises on the first non-finite loss."""
    fetched = jax.device_get(pending)
    _check_finite(fetched)
    keys = ("loss", "nll", "regularizer", "accuracy")
    summary = {f"train_{k}": float(np.mean([m[k] for m in fetched])) for k in keys}
    summary["learning_rate"] = float(fetched[-1]["learning_rate"])
    return summary


def _validate(config: ml_collections.ConfigDict) -> None:
    for key in ("num_epochs", "batch_size", "eval_batch_size", "log_every_steps", "eval_every_epochs"):
        if not config[key] > 0:
            raise ValueError(f"config.{key}={config[key]} must be positive.")
    if config.early_stop_patience < 0:
        raise ValueError(f"config.early_stop_patience={config.early_stop_patience}: use 0 (off) or more.")
    classes = dataset_spec(config.dataset).num_classes
    if config.model.num_classes not in (None, classes):
        raise ValueError(f"model.num_classes={config.model.num_classes}, but {config.dataset.name} has {classes} "
                         "classes: leave model.num_classes None (it is taken from the dataset).")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last
    validation metrics. Everything that can be wrong with the config fails before data is
    prepared or anything is compiled."""
    _validate(config)
    model = create_model(config)
    if config.model.backbone == "imagenet_resnet" and not config.init_from:
        logging.warning("Training the ResNet from scratch (config.init_from=None): the paper and the "
                        "released recipes fine-tune ImageNet weights, so expect far lower accuracy "
                        "than published. See README, 'Pretrained weights'.")
    mesh = parallel.create_mesh(config.num_devices)
    local_batch = parallel.check_batch_size(config.batch_size, mesh)
    check_grad_accum(config, mesh.devices.size)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    checkpoint.check_compatible(workdir, config)
    if not checkpoint.has_checkpoints(workdir):  # A resumed run's backbone is in its checkpoint.
        pretrained.check_init_from(config)

    with distributed.process_0_first("preparing the dataset"):
        data = create_input(config.dataset)
    num_train = data.num_examples(data.split("train_split"))
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {num_train} training examples.")
    total_steps = int(math.ceil(config.num_epochs * steps_per_epoch))
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))

    state = create_train_state(config, model, data.input_shape, mesh, steps_per_epoch)
    ckpts = checkpoint.Checkpoints(workdir, keep=config.checkpoint_keep)
    start = ckpts.latest_step() or 0
    if start:
        state = ckpts.restore(start, state)
        logging.info("Resumed from step %d in %s.", start, ckpts.directory)
    else:
        state = pretrained.apply_init_from(state, config)
    checkpoint.save_config(workdir, config)

    batches = parallel.prefetch_to_mesh(
        data.train_batches(local_batch, seed=config.seed, start_step=start, process_index=jax.process_index(),
                           process_count=jax.process_count()),
        parallel.batch_sharding(mesh))
    p_train_step = make_train_step(config, model, mesh, steps_per_epoch)
    p_eval_step = evaluate.make_eval_step(model, mesh)
    eval_split = data.split("eval_split")
    writer = metric_writer(workdir)
    report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                             every_steps=config.log_every_steps)
    progress = tqdm(total=total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                    disable=jax.process_index() != 0, smoothing=0.1)
    logging.info("%d devices, global batch %d, %d steps/epoch, %d steps.", mesh.devices.size,
                 config.batch_size, steps_per_epoch, total_steps)

    val_metrics: dict[str, Any] = {}
    pending: list[dict[str, jax.Array]] = []
    preempted = False
    preemption = distributed.Preemption(ckpts.manager)  # SIGTERM: save and stop at a step all processes agree on
    try:
        for step in range(start + 1, total_steps + 1):
            state, metrics = p_train_step(state, next(batches))
            pending.append(metrics)
            progress.update()
            report(step)
            if step % config.log_every_steps == 0 or step == total_steps:
                summary = _summarise(pending)
                pending = []
                writer.write_scalars(step, summary)
                progress.set_postfix(loss=f"{summary['train_loss']:.3f}", acc=f"{summary['train_accuracy']:.3f}")
            if step % eval_every == 0 or step == total_steps:
                _check_finite(jax.device_get(pending))  # a non-finite loss stops before the save
                val_metrics = evaluate.run_evaluation(
                    p_eval_step, evaluate.variables_of(state),
                    evaluate.build_eval_batches(data, eval_split, config, mesh, ten_crop=False),
                    model.hypothesis_names, model.num_classes)
                writer.write_scalars(step, {"val_accuracy": val_metrics["accuracy"], "val_loss": val_metrics["loss"]})
                progress.write(f"step {step}: validation accuracy {val_metrics['accuracy']:.4f}")
                ckpts.save(step, state, {checkpoint.METRIC: val_metrics["accuracy"]})
                best = ckpts.best_step()
                if (config.early_stop_patience and best is not None
                        and (step - best) // eval_every >= config.early_stop_patience):
                    progress.write(f"Early stop at step {step}: no improvement since step {best}.")
                    break
            if preemption.reached(step) and step < total_steps:
                if pending:
                    writer.write_scalars(step, _summarise(pending))
                    pending = []
                if step % eval_every:
                    ckpts.save(step, state)
                preempted = True
                progress.write(f"Preempted (SIGTERM) at step {step}: checkpoint saved in "
                               f"{ckpts.directory}; run the same command again to resume.")
                break
    finally:
        preemption.close()
        progress.close()
        ckpts.wait()
        ckpts.close()
        writer.flush()
        writer.close()
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() == 0 and os.path.exists(metrics_path):
        plots.plot_training_curves(metrics_path, os.path.join(workdir, "training_curves.png"))
    return {"step": int(jax.device_get(state.step)), "preempted": preempted, **val_metrics}
