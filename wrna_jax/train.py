"""`train_and_evaluate(config, workdir)`: data-parallel training with evaluation, checkpoints
and automatic resume from the workdir.

The step is a pure function `train_step(state, batch) -> (state, metrics)` compiled once for a
1-D device mesh (batch sharded, state replicated, state buffers donated). Metrics stay on the
devices between logging steps, so the loop never waits for the host.
"""

import functools
import json
import math
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from tqdm import tqdm

from wrna_jax import checkpoint, evaluate, parallel, plots
from wrna_jax.data import datasets, pipeline
from wrna_jax.models import create_model
from wrna_jax.optim import learning_rate_schedule
from wrna_jax.state import TrainState, create_train_state


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, model: Any,
               regularizer_weight: float, schedule: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on the combined NLL plus the weighted diversity regulariser.

    A non-finite loss leaves parameters, statistics and optimiser state unchanged and is
    reported in `metrics['nonfinite']`, so the host can stop with the last good state.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        out, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                   batch["image"], train=True, mutable=["batch_stats"],
                                   rngs={"dropout": dropout_rng})
        nll = -jnp.mean(jnp.take_along_axis(out.log_probs, batch["label"][:, None], axis=1))
        return nll + regularizer_weight * out.regularizer, (out, updates["batch_stats"], nll)

    (loss, (out, batch_stats, nll)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    finite = jnp.isfinite(loss)
    keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep_if_finite(params, state.params),
        batch_stats=keep_if_finite(batch_stats, state.batch_stats),
        opt_state=keep_if_finite(opt_state, state.opt_state))
    metrics = {
        "loss": loss, "nll": nll, "regularizer": out.regularizer,
        "accuracy": jnp.mean(jnp.argmax(out.log_probs, -1) == batch["label"]),
        "learning_rate": schedule(state.step),
        "nonfinite": jnp.where(finite, -1, state.step),
    }
    return new_state, metrics


def make_train_step(config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh,
                    steps_per_epoch: int):
    """`train_step` compiled for the mesh, with the state's buffers donated."""
    step = functools.partial(train_step, model=model,
                             regularizer_weight=float(model.spec.regularizer_weight),
                             schedule=learning_rate_schedule(config, steps_per_epoch))
    replicated = parallel.replicated(mesh)
    return jax.jit(step, in_shardings=(replicated, parallel.batch_sharding(mesh)),
                   out_shardings=(replicated, replicated), donate_argnums=0)


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
    if config.get("init_from"):
        raise ValueError(f"config.init_from={config.init_from!r}: importing pretrained weights is not "
                         "implemented yet; unset it to train from scratch.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last
    validation metrics. Everything that can be wrong with the config fails before data is
    prepared or anything is compiled."""
    _validate(config)
    model = create_model(config)
    if config.model.backbone == "imagenet_resnet" and not config.get("init_from"):
        logging.warning("Training WRN-50-2 from scratch: the paper and the released recipes fine-tune "
                        "ImageNet weights (config.init_from), so expect far lower accuracy than "
                        "published until weight import exists.")
    mesh = parallel.create_mesh(config.num_devices)
    local_batch = parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    checkpoint.check_compatible(workdir, config)

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
    finally:
        progress.close()
        ckpts.wait()
        ckpts.close()
        log.close()
    if jax.process_index() == 0 and os.path.exists(log.path):
        plots.plot_training_curves(log.path, os.path.join(workdir, "training_curves.png"))
    return {"step": int(jax.device_get(state.step)), **val_metrics}
