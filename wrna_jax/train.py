"""`train_and_evaluate(config, workdir)`: the training loop. Data-parallel training with
evaluation, checkpoints and automatic resume from the workdir, over either feed
(`wrna_jax/feeds.py`: the host's tf.data pipeline or splits held in device memory).

The step is a pure function `train_step(state, batch) -> (state, metrics)` (wrna_jax/steps.py)
compiled once for a 1-D device mesh (batch sharded, state replicated, state buffers donated).
Metrics stay on the devices between logging steps, so the loop never waits for the host.

Everything that can be wrong with the config, the workdir or the checkpoints fails before the
data is prepared or anything is compiled; one run at a time trains in a workdir (its lock), a
resume continues the same run (same model, data order and schedule, from the newest intact
checkpoint) and its logs read as those of an uninterrupted run.
"""

import math
import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging
from tqdm import tqdm

from wrna_jax import (checkpoint, distributed, feeds, logs, metrics, metrics_file, parallel, plots,
                      validation, workdir)
from wrna_jax.errors import ConfigError
from wrna_jax.models import create_model
from wrna_jax.state import create_train_state
from wrna_jax.steps import check_grad_accum, make_train_step
from wrna_jax.weights import pretrained


def train_and_evaluate(config: ml_collections.ConfigDict, workdir_path: str) -> dict[str, Any]:
    """Trains `config` in `workdir_path`, resuming from its newest intact checkpoint; returns the
    last validation metrics, the step reached and `interrupted_by` (None, 'SIGTERM' or 'SIGINT')."""
    validation.check_config(config)
    model = create_model(config)
    mesh = parallel.create_mesh(config.num_devices)
    parallel.check_batch_size(config.batch_size, mesh)
    check_grad_accum(config, mesh.devices.size)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    if not checkpoint.has_checkpoints(workdir_path):  # A resumed run's backbone is in its checkpoint.
        if config.model.backbone == "imagenet_resnet" and not config.init_from:
            logging.warning("Training the ResNet from scratch (config.init_from=None): the paper and "
                            "the released recipes fine-tune ImageNet weights, so expect far lower "
                            "accuracy than published. See README, 'Pretrained weights'.")
        pretrained.check_init_from(config)
    if jax.process_index() == 0:
        workdir.check_writable(workdir_path, "--workdir")
    with workdir.TrainLock(workdir_path):
        return _train(config, workdir_path, model, mesh)


def _train(config: ml_collections.ConfigDict, workdir_path: str, model: Any, mesh: jax.sharding.Mesh
           ) -> dict[str, Any]:
    ckpts = checkpoint.Checkpoints(workdir_path, keep=config.checkpoint_keep)
    try:
        resume = checkpoint.resume_point(ckpts, config)
        with distributed.process_0_first("preparing the dataset"):
            data = feeds.create_feed(config, mesh, ("train_split", "eval_split"),
                                     saved=checkpoint.saved_feed(ckpts, resume) if resume else None,
                                     announce=_say)
        config = _with_feed(config, data.kind)
        num_train = data.num_examples(data.split("train_split"))
        steps_per_epoch = num_train // config.batch_size
        if steps_per_epoch < 1:
            raise ConfigError(f"batch_size={config.batch_size} exceeds the {num_train} training examples.")
        total_steps = int(math.ceil(config.num_epochs * steps_per_epoch))
        eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
        state = create_train_state(config, model, data.input_shape, mesh, steps_per_epoch)
        # Restored before deciding anything: a damaged newest state is set aside here.
        start, state = ckpts.restore_newest(state) if resume else (0, state)
        if start >= total_steps:
            message = (f"Nothing to do: the run in {workdir_path} is at step {start}, and "
                       f"num_epochs={config.num_epochs} is {total_steps} steps. Raise --config.num_epochs "
                       "to train longer; eval.py evaluates it.")
            logging.warning(message)
            print(message, flush=True)
            return {"step": start, "interrupted_by": None, "nothing_to_do": True}
        if not start:
            state = pretrained.apply_init_from(state, config)
        _say(_header(config, workdir_path, model, mesh, data, state, start, total_steps, steps_per_epoch))
        logs.truncate_after(workdir_path, start)
        checkpoint.save_config(workdir_path, config)
        return _loop(config, workdir_path, model, mesh, data, state, ckpts, start,
                     total_steps, steps_per_epoch, eval_every)
    finally:
        ckpts.close()


def _say(line: str) -> None:
    """A line for the person running the job (process 0)."""
    if jax.process_index() == 0:
        print(line, flush=True)


def _header(config: ml_collections.ConfigDict, workdir_path: str, model: Any, mesh: jax.sharding.Mesh,
            data: feeds.Feed, state: Any, start: int, total_steps: int, steps_per_epoch: int) -> str:
    """What is trained on what, where: the lines printed before the first step."""
    parameters = sum(x.size for x in jax.tree.leaves(state.params))
    attention = config.attention
    module = (f"{attention.preset} attention, AD={attention.depth} AW={attention.width}" if attention.depth
              else "no attention")
    train_split, eval_split = data.split("train_split"), data.split("eval_split")
    devices = mesh.devices.flat[0]
    return "\n".join([
        f"model: {config.model.backbone} + {module}, {parameters / 1e6:.2f}M parameters, {config.model.dtype}",
        f"data: {config.dataset.name}, {data.num_examples(train_split):,} training ({train_split}), "
        f"{data.num_examples(eval_split):,} validation ({eval_split}); {data.kind} feed",
        f"devices: {mesh.devices.size} x {devices.device_kind} ({devices.platform}); global batch "
        f"{config.batch_size}, {steps_per_epoch:,} steps/epoch, {total_steps:,} steps ({config.num_epochs:g} epochs)",
        f"workdir: {workdir_path}" + (f" (Resumed from step {start})" if start else " (new run)")])


def _with_feed(config: ml_collections.ConfigDict, kind: str) -> ml_collections.ConfigDict:
    """`config` with the feed 'auto' chose, as the run's checkpoints record it."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.input.feed = kind
    return config


def _loop(config: ml_collections.ConfigDict, workdir_path: str, model: Any, mesh: jax.sharding.Mesh,
          data: feeds.Feed, state: Any, ckpts: checkpoint.Checkpoints, start: int,
          total_steps: int, steps_per_epoch: int, eval_every: int) -> dict[str, Any]:
    batches = data.train_batches(config, mesh, start)
    p_train_step = make_train_step(config, model, mesh, steps_per_epoch)
    p_eval_step = metrics.make_eval_step(model, mesh)
    eval_split = data.split("eval_split")
    writer = logs.metric_writer(workdir_path)
    progress = tqdm(total=total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                    disable=jax.process_index() != 0, smoothing=0.1)

    val_metrics: dict[str, Any] = {}
    pending: list[dict[str, jax.Array]] = []
    # SIGTERM or Ctrl-C: save and stop at a step all processes agree on.
    preemption = distributed.Preemption(ckpts.manager)
    window_start = time.perf_counter()
    try:
        for step in range(start + 1, total_steps + 1):
            state, step_metrics = p_train_step(state, next(batches))
            pending.append(step_metrics)
            progress.update()
            if step % config.log_every_steps == 0 or step == total_steps:
                summary = metrics.summarise_steps(pending, ckpts)
                now = time.perf_counter()
                summary["steps_per_sec"] = len(pending) / (now - window_start)
                pending, window_start = [], now
                writer.write_scalars(step, summary)
                progress.set_postfix(loss=f"{summary['train_loss']:.3f}", acc=f"{summary['train_accuracy']:.3f}")
            if step % eval_every == 0 or step == total_steps:
                metrics.check_finite(jax.device_get(pending), ckpts)  # a non-finite loss stops before the save
                val_metrics = metrics.run_evaluation(
                    p_eval_step, metrics.variables_of(state),
                    data.eval_batches(eval_split, config, mesh, ten_crop=False),
                    model.hypothesis_names, model.num_classes)
                writer.write_scalars(step, {"val_accuracy": val_metrics["accuracy"], "val_loss": val_metrics["loss"]})
                progress.write(f"step {step} (epoch {step / steps_per_epoch:.4g}): validation accuracy "
                               f"{val_metrics['accuracy']:.4f}, loss {val_metrics['loss']:.4f}")
                stop = checkpoint.save_evaluated(ckpts, step, state, config, val_metrics["accuracy"], eval_every)
                if stop:
                    progress.write(stop)
                    break
            if preemption.reached(step) and step < total_steps:
                if pending:
                    writer.write_scalars(step, metrics.summarise_steps(pending, ckpts))
                    pending = []
                progress.write(checkpoint.save_interrupted(ckpts, step, state, config, eval_every, preemption.signal))
                break
    finally:
        preemption.close()
        progress.close()
        ckpts.wait()
        writer.flush()
        writer.close()
    metrics_path = os.path.join(workdir_path, logs.METRICS_FILE)
    chosen = {}
    if jax.process_index() == 0 and os.path.exists(metrics_path):
        plots.plot_training_curves(metrics_path, os.path.join(workdir_path, "training_curves.png"))
        chosen = metrics_file.selection(metrics_path) or {}
        if chosen:
            progress.write(metrics_file.describe_selection(chosen, eval_split))
        progress.write(f"Checkpoints: {ckpts.directory}; curves: {os.path.join(workdir_path, 'training_curves.png')}; "
                       f"logs: {metrics_path} and TensorBoard events in {workdir_path}.")
    return {"step": int(jax.device_get(state.step)), "interrupted_by": preemption.signal, **val_metrics, **chosen}
