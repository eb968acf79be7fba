"""`train_and_evaluate(config, workdir)`: data-parallel training with evaluation, checkpoints
and automatic resume from the workdir.

The step is a pure function `train_step(state, batch) -> (state, metrics)` (wrna_jax/steps.py)
compiled once for a 1-D device mesh (batch sharded, state replicated, state buffers donated).
Metrics stay on the devices between logging steps, so the loop never waits for the host.
"""

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from tqdm import tqdm

from wrna_jax import checkpoint, distributed, evaluate, parallel, plots, weights
from wrna_jax.data import datasets, pipeline
from wrna_jax.models import create_model
from wrna_jax.state import create_train_state
from wrna_jax.steps import check_grad_accum, make_train_step


class MetricsLog:
    """Process 0's TensorBoard events (clu) and `metrics.jsonl`; silent on other processes."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.active)
        self.path = os.path.join(workdir, "metrics.jsonl")

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        self.writer.write_scalars(step, dict(scalars))
        if self.active:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, **scalars}) + "\n")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _summarise(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Means of the step metrics since the last log; raises on the first non-finite loss."""
    fetched = jax.device_get(pending)
    bad = [int(m["nonfinite"]) for m in fetched if int(m["nonfinite"]) >= 0]
    if bad:
        raise FloatingPointError(f"The loss became NaN or infinite at step {bad[0] + 1}; training stopped "
                                 "without saving that state. Lower optimizer.learning_rate or check the "
                                 "input data; the last good checkpoint in the workdir is kept.")
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last
    validation metrics. Everything that can be wrong with the config fails before data is
    prepared or anything is compiled."""
    _validate(config)
    model = create_model(config)
    if config.model.backbone == "imagenet_resnet" and not config.get("init_from"):
        logging.warning("Training the ResNet from scratch (config.init_from=None): the paper and the "
                        "released recipes fine-tune ImageNet weights, so expect far lower accuracy "
                        "than published. See README, 'Pretrained weights'.")
    mesh = parallel.create_mesh(config.num_devices)
    local_batch = parallel.check_batch_size(config.batch_size, mesh)
    check_grad_accum(config, mesh.devices.size)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    checkpoint.check_compatible(workdir, config)
    if not checkpoint.has_checkpoints(workdir):  # A resumed run's backbone is in its checkpoint.
        weights.check_init_from(config)

    with distributed.process_0_first("preparing the dataset"):
        builder = datasets.get_builder(config.dataset)
    num_train = builder.info.splits[config.dataset.train_split].num_examples
    steps_per_epoch = num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {num_train} training examples.")
    total_steps = int(math.ceil(config.num_epochs * steps_per_epoch))
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))

    state = create_train_state(config, model, datasets.input_shape(config.dataset, builder), mesh, steps_per_epoch)
    ckpts = checkpoint.Checkpoints(workdir, keep=config.checkpoint_keep)
    start = ckpts.latest_step() or 0
    if start:
        state = ckpts.restore(start, state)
        logging.info("Resumed from step %d in %s.", start, ckpts.directory)
    else:
        state = weights.apply_init_from(state, config)
    checkpoint.save_config(workdir, config)

    train_ds = pipeline.create_split(
        builder, config.dataset.train_split, local_batch, train=True, seed=config.seed,
        preprocess_fn=datasets.preprocess_fn(config.dataset, train=True),
        process_index=jax.process_index(), process_count=jax.process_count(),
        cache=config.dataset.cache, shuffle_buffer=config.dataset.shuffle_buffer, start_step=start)
    batches = parallel.prefetch_to_mesh(pipeline.as_numpy_batches(train_ds),
                                        parallel.batch_sharding(mesh))
    p_train_step = make_train_step(config, model, mesh, steps_per_epoch)
    p_eval_step = evaluate.make_eval_step(model, mesh)
    log = MetricsLog(workdir)
    progress = tqdm(total=total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                    disable=jax.process_index() != 0, smoothing=0.1)
    logging.info("%d devices, global batch %d, %d steps/epoch, %d steps.", mesh.devices.size,
                 config.batch_size, steps_per_epoch, total_steps)

    val_metrics: dict[str, Any] = {}
    pending: list[dict[str, jax.Array]] = []
    last_log = time.perf_counter()
    preempted = False
    preemption = distributed.Preemption()  # SIGTERM: save and stop at a step all processes agree on
    try:
        for step in range(start + 1, total_steps + 1):
            state, metrics = p_train_step(state, next(batches))
            pending.append(metrics)
            progress.update()
            if step % config.log_every_steps == 0 or step == total_steps:
                summary = _summarise(pending)
                now = time.perf_counter()
                summary["steps_per_second"] = len(pending) / (now - last_log)
                pending, last_log = [], now
                log.write(step, summary)
                progress.set_postfix(loss=f"{summary['train_loss']:.3f}",
                                     acc=f"{summary['train_accuracy']:.3f}")
            if step % eval_every == 0 or step == total_steps:
                if pending:
                    _summarise(pending)
                val_metrics = evaluate.evaluate_batches(
                    p_eval_step, state, evaluate.eval_batches(builder, config.dataset.eval_split, config, mesh,
                                                            ten_crop=False),
                    model.hypothesis_names, config.model.num_classes)
                log.write(step, {"val_accuracy": val_metrics["accuracy"], "val_loss": val_metrics["loss"]})
                progress.write(f"step {step}: validation accuracy {val_metrics['accuracy']:.4f}")
                ckpts.save(step, state, {checkpoint.METRIC: val_metrics["accuracy"]})
                best = ckpts.best_step()
                if (config.early_stop_patience and best is not None
                        and (step - best) // eval_every >= config.early_stop_patience):
                    progress.write(f"Early stop at step {step}: no improvement since step {best}.")
                    break
            if preemption.reached(step) and step < total_steps:
                if pending:
                    log.write(step, _summarise(pending))
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
        log.close()
    if jax.process_index() == 0 and os.path.exists(log.path):
        plots.plot_training_curves(log.path, os.path.join(workdir, "training_curves.png"))
    return {"step": int(jax.device_get(state.step)), "preempted": preempted, **val_metrics}
