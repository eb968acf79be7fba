"""Training and evaluation on data held in device memory: no TensorFlow, no host input pipeline.

For a dataset that fits in accelerator memory (200,000 cluttered-MNIST canvases of 40 x 40 are
320 MB as uint8) the host pipeline is pure overhead, and on a machine with jax but without
TensorFlow it is not there at all. Here every split is uploaded once as uint8, replicated over
the mesh. Training reads a stream of indices: epoch e of it is a permutation of the training
split drawn on the device from (config.seed, e), and batch k is positions k*B .. (k+1)*B - 1 of
the stream, so batches may straddle epochs exactly as in `pipeline.create_split`. One compiled
call runs a chunk of steps (`lax.scan`; one step per call on the CPU, `default_steps_per_call`)
of the same `steps.train_step` as `train.py`, gathering each batch on the device, so the host
launches one call per chunk and the accelerator never waits for input. The images become
float32 in [0, 1] exactly as the cluttered-MNIST preprocessing computes x / 255, so for the same
order of examples the steps are those of `train.py` (tests/test_train_on_device.py compares them).

Checkpoints, resume, the best checkpoint by validation accuracy, early stopping, Ctrl-C/SIGTERM
saves, metrics.jsonl and training_curves.png are as in `train.py` (no TensorBoard events: those
need TensorFlow).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from wrna_jax import checkpoint, distributed, metrics, metrics_file, parallel, plots, validation, workdir
from wrna_jax.data import canvases
from wrna_jax.data.registry import dataset_spec
from wrna_jax.errors import ConfigError
from wrna_jax.models import create_model
from wrna_jax.state import abstract_variables, create_train_state
from wrna_jax.steps import configured_train_step

# Folded into the seed's key for the epoch permutations, apart from the initialisation's keys.
_ORDER_STREAM = 0x6F726472  # "ordr"
FAMILIES = ("cluttered_mnist",)  # whose preprocessing is x / 255 and nothing else


@dataclasses.dataclass(frozen=True)
class DeviceSplit:
    """A split in device memory, replicated over the mesh: uint8 images (N, H, W, C) and int32
    labels (N,)."""

    images: jax.Array
    labels: jax.Array

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


def put_split(images: np.ndarray, labels: np.ndarray, mesh: jax.sharding.Mesh) -> DeviceSplit:
    """Uploads a whole split (every process passes the same arrays); images uint8 (N, H, W, C)."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels) or not len(labels):
        raise ValueError(f"images {images.dtype} {images.shape}, labels {labels.shape}: expected uint8 "
                         "(N, H, W, C) images and N >= 1 labels.")
    replicated = parallel.replicated(mesh)
    put = lambda a: jax.make_array_from_callback(a.shape, replicated, lambda index: a[index])
    return DeviceSplit(put(images), put(labels.astype(np.int32)))


# The 256 values of x / 255 as the cluttered-MNIST preprocessing computes them (IEEE float32
# division). XLA compiles x / 255 as x * (1 / 255), one ulp off for some pixels.
_INTENSITIES = np.arange(256, dtype=np.float32) / np.float32(255)


def as_inputs(images: jax.Array) -> jax.Array:
    """uint8 canvases -> the model's float32 input in [0, 1], exactly the cluttered-MNIST
    preprocessing's x / 255."""
    return jnp.asarray(_INTENSITIES)[images]


def epoch_orders(seed: int, first_epoch: jax.Array | int, num_examples: int) -> jax.Array:
    """(2, N): the training order of epochs `first_epoch` and `first_epoch` + 1, permutations
    of 0 .. N - 1 drawn from (seed, epoch). Traceable."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _ORDER_STREAM)
    return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), num_examples))(
        jnp.asarray(first_epoch, jnp.int32) + jnp.arange(2))


def first_epoch(start_step: int, batch_size: int, num_examples: int) -> int:
    """The epoch that step `start_step`'s first example comes from."""
    return start_step * batch_size // num_examples


def select_indices(orders: jax.Array, start_step: jax.Array | int, num_steps: int, batch_size: int) -> jax.Array:
    """(num_steps, batch_size) indices of steps start_step .. start_step + num_steps - 1 of the
    stream, from the `epoch_orders` of `first_epoch(start_step, ...)`; needs num_steps *
    batch_size <= N, so that the steps touch at most those two epochs. Traceable."""
    num_examples = orders.shape[1]
    if num_steps * batch_size > num_examples:
        raise ValueError(f"{num_steps} steps of {batch_size} exceed one epoch of {num_examples}.")
    first = jnp.asarray(start_step, jnp.int32) * batch_size
    positions = first + jnp.arange(num_steps * batch_size, dtype=jnp.int32)
    indices = orders[positions // num_examples - first // num_examples, positions % num_examples]
    return indices.reshape(num_steps, batch_size)


def stream_indices(seed: int, start_step: int, num_steps: int, batch_size: int, num_examples: int) -> jax.Array:
    """(num_steps, batch_size) indices of steps start_step .. start_step + num_steps - 1 of the
    training stream (module docstring), num_steps * batch_size <= num_examples."""
    orders = epoch_orders(seed, first_epoch(start_step, batch_size, num_examples), num_examples)
    return select_indices(orders, start_step, num_steps, batch_size)


def make_run_steps(config: ml_collections.ConfigDict, model: Any, mesh: jax.sharding.Mesh, steps_per_epoch: int):
    """`run(state, split, indices) -> (state, metrics)`: the steps whose batches are
    `split[indices[s]]`, s = 0 .. S - 1, in one compiled call (state donated; metrics stacked
    along the steps)."""
    step = configured_train_step(config, model, mesh, steps_per_epoch)
    batch_sharding = parallel.batch_sharding(mesh)

    def run(state, images, labels, indices):
        def body(state, idx):
            batch = {"image": as_inputs(images[idx]), "label": labels[idx]}
            return step(state, jax.lax.with_sharding_constraint(batch, batch_sharding))

        if indices.shape[0] == 1:  # no loop: even a one-trip scan is slow on the CPU (default_steps_per_call)
            state, metrics_ = body(state, indices[0])
            return state, jax.tree.map(lambda m: m[None], metrics_)
        return jax.lax.scan(body, state, indices)

    replicated = parallel.replicated(mesh)
    compiled = jax.jit(run, in_shardings=replicated, out_shardings=replicated, donate_argnums=0)
    return lambda state, split, indices: compiled(state, split.images, split.labels, indices)


def make_evaluate(model: Any, mesh: jax.sharding.Mesh, batch_size: int):
    """`evaluate(variables, split) -> metrics` over the whole device-resident split, in batches
    of `batch_size` (the last one masked where it runs past the end)."""
    parallel.check_batch_size(batch_size, mesh, "eval_batch_size")
    batch_sharding = parallel.batch_sharding(mesh)

    @functools.partial(jax.jit, in_shardings=parallel.replicated(mesh))
    def sums(variables, images, labels, start):
        index = start + jnp.arange(batch_size)
        valid = index < labels.shape[0]
        index = jnp.minimum(index, labels.shape[0] - 1)
        batch = {"image": as_inputs(images[index]), "label": labels[index], "mask": valid}
        return metrics.eval_step(variables, jax.lax.with_sharding_constraint(batch, batch_sharding), model=model)[0]

    def evaluate(variables: Any, split: DeviceSplit) -> dict[str, Any]:
        totals = None
        for start in range(0, split.num_examples, batch_size):
            part = sums(variables, split.images, split.labels, np.int32(start))
            totals = part if totals is None else jax.tree.map(jnp.add, totals, part)
        return metrics.metrics_from_sums(totals, model.hypothesis_names, model.num_classes)

    return evaluate


def check_config(config: ml_collections.ConfigDict) -> None:
    """What `train.py` checks, and that the dataset's preprocessing is the one done here."""
    validation.check_config(config)
    family = dataset_spec(config.dataset).family
    if family not in FAMILIES:
        raise ConfigError(f"dataset {config.dataset.name!r} ({family} preprocessing): training on "
                          f"device-resident data supports {FAMILIES} only; use train.py.")
    if config.init_from:
        raise ConfigError(f"init_from={config.init_from!r}: training on device-resident data starts "
                          "from scratch; use train.py to fine-tune imported weights.")


def train_on_device(config: ml_collections.ConfigDict, workdir_path: str, train: DeviceSplit,
                    validation_split: DeviceSplit, steps_per_call: int | None = None) -> dict[str, Any]:
    """Trains `config` on the device-resident `train` split in `workdir_path` (resuming from its
    newest intact checkpoint), validating on `validation_split` every `eval_every_epochs`.
    `steps_per_call`: None for `default_steps_per_call`. Returns the last validation metrics,
    the step reached and `interrupted_by`."""
    check_config(config)
    model = create_model(config)
    mesh = parallel.create_mesh(config.num_devices)
    parallel.check_batch_size(config.batch_size, mesh)
    steps_per_epoch = train.num_examples // config.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size={config.batch_size} exceeds the {train.num_examples} training examples.")
    if jax.process_index() == 0:
        workdir.check_writable(workdir_path, "--workdir")
    with workdir.TrainLock(workdir_path):
        ckpts = checkpoint.Checkpoints(workdir_path, keep=config.checkpoint_keep)
        try:
            resume = checkpoint.resume_point(ckpts, config)
            state = create_train_state(config, model, train.input_shape, mesh, steps_per_epoch)
            start, state = ckpts.restore_newest(state) if resume else (0, state)
            if jax.process_index() == 0 and os.path.exists(os.path.join(workdir_path, metrics_file.METRICS_FILE)):
                metrics_file.truncate_after(os.path.join(workdir_path, metrics_file.METRICS_FILE), start)
            checkpoint.save_config(workdir_path, config)
            return _loop(config, workdir_path, model, mesh, train, validation_split, state, ckpts, start,
                         steps_per_epoch, steps_per_call)
        finally:
            ckpts.close()


def default_steps_per_call(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """Steps per compiled call: `log_every_steps` (at most an epoch) on accelerators; 1 on the
    CPU, where XLA runs the step inside a `lax.scan` loop (even of one trip, or unrolled) far
    slower than the same step compiled alone (jax 0.10.2), while a call costs little."""
    if jax.default_backend() == "cpu":
        return 1
    return max(1, min(config.log_every_steps, steps_per_epoch))


def _call_ends(start: int, total: int, per_call: int, eval_every: int) -> list[int]:
    """The steps each compiled call ends at: every `per_call` steps and at every evaluation."""
    ends = set(range(per_call, total, per_call)) | set(range(eval_every, total, eval_every)) | {total}
    return sorted(end for end in ends if end > start)


def _log_steps(pending: list[dict[str, jax.Array]], ckpts: checkpoint.Checkpoints, log_path: str | None,
               step: int) -> dict[str, float]:
    """The means of the stacked step metrics of the calls since the last log (raising on a
    non-finite step), appended to metrics.jsonl when `log_path`."""
    fetched = jax.device_get(pending)
    summary = metrics.summarise_steps(
        [{k: v[i] for k, v in part.items()} for part in fetched for i in range(len(part["loss"]))], ckpts)
    if log_path:
        metrics_file.append(log_path, step, summary)
    return summary


def _loop(config: ml_collections.ConfigDict, workdir_path: str, model: Any, mesh: jax.sharding.Mesh,
          train: DeviceSplit, validation_split: DeviceSplit, state: Any, ckpts: checkpoint.Checkpoints,
          start: int, steps_per_epoch: int, steps_per_call: int | None) -> dict[str, Any]:
    total_steps = int(math.ceil(config.num_epochs * steps_per_epoch))
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
    per_call = steps_per_call or default_steps_per_call(config, steps_per_epoch)
    run_steps = make_run_steps(config, model, mesh, steps_per_epoch)
    evaluate = make_evaluate(model, mesh, config.eval_batch_size)
    replicated = parallel.replicated(mesh)
    orders_of = jax.jit(epoch_orders, static_argnums=(0, 2), out_shardings=replicated)
    select = jax.jit(select_indices, static_argnums=(2, 3), out_shardings=replicated)
    orders: dict[int, jax.Array] = {}  # drawn once per epoch, not per call
    log_path = os.path.join(workdir_path, metrics_file.METRICS_FILE)
    writes = jax.process_index() == 0
    progress = tqdm(total=total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
                    disable=not writes, smoothing=0.1)
    logging.info("%d devices, global batch %d, %d steps/epoch, %d steps, %d step(s) per call.",
                 mesh.devices.size, config.batch_size, steps_per_epoch, total_steps, per_call)
    val_metrics: dict[str, Any] = {}
    pending: list[dict[str, jax.Array]] = []
    step = start
    preemption = distributed.Preemption(ckpts.manager)
    try:
        for end in _call_ends(start, total_steps, per_call, eval_every):
            epoch = first_epoch(step, config.batch_size, train.num_examples)
            if epoch not in orders:
                orders = {epoch: orders_of(config.seed, epoch, train.num_examples)}
            indices = select(orders[epoch], step, end - step, config.batch_size)
            state, stacked = run_steps(state, train, indices)
            pending.append(stacked)
            progress.update(end - step)
            previous, step = step, end
            evaluates = step % eval_every == 0 or step == total_steps
            if evaluates or step // config.log_every_steps > previous // config.log_every_steps:
                summary = _log_steps(pending, ckpts, log_path if writes else None, step)
                pending = []
                progress.set_postfix(loss=f"{summary['train_loss']:.3f}", acc=f"{summary['train_accuracy']:.3f}")
            if evaluates:
                val_metrics = evaluate(metrics.variables_of(state), validation_split)
                if writes:
                    metrics_file.append(log_path, step, {"val_accuracy": val_metrics["accuracy"],
                                                         "val_loss": val_metrics["loss"]})
                progress.write(f"step {step}: validation accuracy {val_metrics['accuracy']:.4f}")
                stop = checkpoint.save_evaluated(ckpts, step, state, config, val_metrics["accuracy"], eval_every)
                if stop:
                    progress.write(stop)
                    break
            if preemption.reached(step) and step < total_steps:
                if pending:  # the partial window, as train.py logs it
                    _log_steps(pending, ckpts, log_path if writes else None, step)
                    pending = []
                progress.write(checkpoint.save_interrupted(ckpts, step, state, config, eval_every, preemption.signal))
                break
    finally:
        preemption.close()
        progress.close()
        ckpts.wait()
    chosen = {}
    if writes and os.path.exists(log_path):
        plots.plot_training_curves(log_path, os.path.join(workdir_path, "training_curves.png"))
        chosen = metrics_file.selection(log_path) or {}
        if chosen:
            progress.write(metrics_file.describe_selection(chosen, "validation"))
    return {"step": step, "interrupted_by": preemption.signal, **val_metrics, **chosen}


def evaluate_checkpoint_on_device(config: ml_collections.ConfigDict, workdir_path: str,
                                  splits: Mapping[str, DeviceSplit], which: str = "best") -> dict[str, Any]:
    """The metrics of checkpoint `which` ('best', 'latest' or a step) of the run in
    `workdir_path` on each device-resident split: {'checkpoint_step': step, name: metrics}."""
    check_config(config)
    model = create_model(config)
    mesh = parallel.create_mesh(config.num_devices)
    workdir.check_run_exists(workdir_path)
    ckpts = checkpoint.Checkpoints(workdir_path, keep=config.checkpoint_keep, read_only=True)
    try:
        step = ckpts.resolve(which)
        checkpoint.check_same_model(ckpts.saved_config(step), config, step, ckpts.directory)
        first = next(iter(splits.values()))
        replicated = parallel.replicated(mesh)
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                                abstract_variables(model, first.input_shape))
        variables = ckpts.restore_parts(step, abstract)
    finally:
        ckpts.close()
    evaluate = make_evaluate(model, mesh, config.eval_batch_size)
    return {"checkpoint_step": step, **{name: evaluate(variables, split) for name, split in splits.items()}}


def cluttered_mnist_splits(dataset: Mapping[str, Any], mesh: jax.sharding.Mesh,
                           names: tuple[str, ...] = canvases.SPLITS, **overrides: Any) -> dict[str, DeviceSplit]:
    """The canvases `config.dataset` describes (with `overrides`, e.g. `num_distractors=32`),
    generated with numpy (the same arrays as the TFDS builder stores) and uploaded."""
    spec = canvases.spec_of(dataset, **overrides)
    start = time.perf_counter()
    sources = canvases.source_splits(spec.source, spec.seed, data_dir=dataset["data_dir"],
                                     mnist_dir=dataset["cluttered_mnist"]["mnist_dir"])
    splits = {}
    for name in names:
        arrays = canvases.generate_split(spec, name, sources)
        splits[name] = put_split(arrays["image"], arrays["label"], mesh)
    logging.info("Generated %s of %s in %.1f s.", "/".join(names), spec.name, time.perf_counter() - start)
    return splits
