"""Orbax checkpoints in the workdir: the latest N plus the best by validation accuracy, each
with the config it was trained with, and damaged checkpoints found, named and moved aside.

Layout: `workdir/checkpoints/<step>/` holds the items `state` (the training state), `config`
(the run's config, which is what a resume or an evaluation is checked against) and `metrics`
(validation accuracy). `workdir/config.json` is a copy for people to read. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a run killed while saving
leaves the previous checkpoints intact.

A checkpoint that cannot be read (a truncated or zero-filled data file, a missing manifest or
item, metrics or config that are not JSON) is reported by step and reason. Training moves it to
`workdir/checkpoints_damaged/<step>/` (never deleting it) and resumes from the newest intact
one; evaluation, which may run beside training and writes nothing there, skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from wrna_jax.errors import ConfigError, DamagedCheckpointError, MissingFileError

METRIC = "accuracy"
DAMAGED_DIR = "checkpoints_damaged"
# Config sections that change the model's parameters: a checkpoint only fits the same ones.
MODEL_SECTIONS = ("model", "attention")
# Settings that fix which examples each step sees and the learning rate at each step: a resumed
# run that changed them would silently continue as a different run.
RUN_SETTINGS = ("dataset", "seed", "batch_size", "grad_accum_steps", "optimizer", "schedule")
# Paths within those that change neither (where the data lives, whether it is cached).
# ('dataset.shuffle_buffer': runs saved before both feeds read data/order.py's order had one;
# `check_same_order` decides whether they can resume.)
_RUN_SETTINGS_EXEMPT = ("dataset.data_dir", "dataset.manual_dir", "dataset.cache", "dataset.cache_dir",
                        "dataset.prepared_dir", "dataset.shuffle_buffer")
# The JSON file of each JSON item (orbax's JsonCheckpointHandler names it 'metadata' unless told).
_JSON_FILES = {"config": "metadata", "metrics": "metrics"}
# What reading a damaged checkpoint raises: TensorStore's read errors (plain Exception), orbax's
# errors for missing items and files, and JSON that does not parse. Anything else is a bug and
# propagates.
_DAMAGE_SIGNS = ("Encountered error while reading", "OUT_OF_RANGE", "DATA_LOSS", "NOT_FOUND",
                 "FAILED_PRECONDITION", "Error opening", "Error reading", "Must provide `args`",
                 "does not exist", "No such file")


def _metric(metrics: Mapping[str, float]) -> float:
    return metrics[METRIC]


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a finished checkpoint (orbax names them by step; unfinished ones
    carry a temporary suffix), without creating anything."""
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def structural_problem(step_dir: str) -> str | None:
    """Why the checkpoint directory `step_dir` cannot be restored, judged from its files alone
    (cheap, before orbax reads it), or None."""
    state = os.path.join(step_dir, "state")
    if not os.path.isdir(state):
        if os.path.isdir(os.path.join(step_dir, "default")):
            return "it was written by an older wrna_jax without its config (item 'default')"
        return "its 'state' item is missing"
    if not os.path.isfile(os.path.join(state, "manifest.ocdbt")):
        return "state/manifest.ocdbt is missing"
    for item, name in _JSON_FILES.items():
        path = os.path.join(step_dir, item, name)
        if item == "config" and not os.path.isfile(path):
            return "its 'config' item is missing"
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    json.load(f)
            except (OSError, ValueError) as error:
                return f"{item}/{name} is not valid JSON ({error})"
    return None


def _describe(error: BaseException) -> str:
    """The innermost cause of a read error (TensorStore's status, e.g. OUT_OF_RANGE), one line,
    without TensorStore's long spec dump."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: {error}"
    for cut in (" [tensorstore_spec", "See full TensorStore details", "\n"):
        text = text.split(cut)[0]
    text = text.strip()
    return text if len(text) <= 300 else text[:297] + "..."


def _is_damage(error: BaseException) -> bool:
    if isinstance(error, (json.JSONDecodeError, OSError)):
        return True
    return any(sign in str(error) for sign in _DAMAGE_SIGNS)


class _DrainingLoop(asyncio.SelectorEventLoop):
    """An event loop that, when closed, first cancels the tasks still pending on it and runs
    until they have ended.

    Orbax runs each restore with `loop.run_until_complete(...)` then `loop.close()`. When one
    array read fails, `asyncio.gather` raises at once while the reads of the other arrays are
    still in flight: closing the loop under them leaves TensorStore's I/O threads calling
    `call_soon_threadsafe` on a closed loop ("Event loop is closed", printed from each thread),
    and the abandoned coroutines and tasks complain when collected ("Exception ignored in
    <coroutine _read_array_index_and_device_put>", "Task exception was never retrieved"):
    dozens to thousands of tracebacks around the one error we report. Ending the reads while
    the loop still runs leaves none of them."""

    def close(self) -> None:
        if not self.is_running() and not self.is_closed():
            pending = asyncio.all_tasks(self)
            for task in pending:
                task.cancel()
            if pending:
                self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        super().close()

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        """A read that TensorStore completes after its restore gave up (and this loop closed)
        has nobody waiting for it: its callback is dropped instead of raising in that thread."""
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        except RuntimeError:
            if self.is_closed():
                return None
            raise


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _DrainingLoop()


@contextlib.contextmanager
def _draining_reads() -> Iterator[None]:
    """Makes the event loops orbax creates meanwhile `_DrainingLoop`s, so that a failed restore
    ends its other reads before its loop closes."""
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


class _IntactSteps:
    """Orbax's standard step names, leaving out the steps found damaged (a NameFormat)."""

    def __init__(self, skip: set[int]):
        self.base = ocp.step.standard_name_format()
        self.skip = skip

    def build_name(self, step: int) -> str:
        return self.base.build_name(step)

    def find_all(self, base_path: Any) -> Iterator[Any]:
        return (m for m in self.base.find_all(base_path) if m.step not in self.skip)

    def find_step(self, base_path: Any, step: int) -> Any:
        if step in self.skip:
            raise ValueError(f"No intact checkpoint for step {step}.")
        return self.base.find_step(base_path, step)


class Checkpoints:
    """Saves and restores the training state (any pytree of arrays) with validation metrics
    and the run's config. `read_only` (evaluation) writes nothing: damaged steps are skipped,
    not moved."""

    def __init__(self, workdir: str, keep: int = 2, *, read_only: bool = False):
        if keep < 1:
            raise ConfigError(f"checkpoint_keep={keep}: keep at least 1 latest checkpoint.")
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.damaged_directory = os.path.abspath(os.path.join(workdir, DAMAGED_DIR))
        self.read_only = read_only
        self.damaged: dict[int, str] = {}  # step -> what happened to it, for messages
        self._reasons: dict[int, str] = {}  # step -> why it is damaged
        self._announced: set[int] = set()
        self._skip: set[int] = set()
        self._set_aside_structurally_damaged()
        policy = policies.AnyPreservationPolicy([
            policies.LatestN(keep),
            policies.BestN(get_metric_fn=_metric, n=1, keep_checkpoints_without_metrics=False),
        ])
        self.manager = ocp.CheckpointManager(
            self.directory,
            # best_fn makes orbax store the metrics with each step; the policy decides what stays.
            options=ocp.CheckpointManagerOptions(
                preservation_policy=None if read_only else policy, best_fn=_metric, best_mode="max",
                create=not read_only, read_only=read_only, cleanup_tmp_directories=not read_only,
                step_name_format=_IntactSteps(self._skip)))

    def _set_aside_structurally_damaged(self) -> None:
        if not os.path.isdir(self.directory):
            return
        for name in sorted(os.listdir(self.directory)):
            if name.isdigit():
                problem = structural_problem(os.path.join(self.directory, name))
                if problem:
                    self._set_aside(int(name), problem)

    def _set_aside(self, step: int, reason: str) -> None:
        """Records `step` as damaged; training moves it under checkpoints_damaged/. Nothing is
        logged here: a run that goes on past it announces it (`announce_damaged`), one that
        stops names it in its error."""
        self._skip.add(step)
        self._reasons[step] = reason
        source = os.path.join(self.directory, str(step))
        if self.read_only:
            self.damaged[step] = f"checkpoint step {step} in {self.directory} is damaged ({reason}); skipped"
        else:
            target = os.path.join(self.damaged_directory, str(step))
            suffix = 1
            while os.path.exists(target):
                target = os.path.join(self.damaged_directory, f"{step}-{suffix}")
                suffix += 1
            if jax.process_index() == 0 and os.path.exists(source):
                os.makedirs(self.damaged_directory, exist_ok=True)
                shutil.move(source, target)
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
            self.damaged[step] = (f"checkpoint step {step} in {self.directory} is damaged ({reason}); "
                                  f"moved to {target}")

    def announce_damaged(self) -> None:
        """Logs a warning for each damaged step not announced yet: training goes on without it."""
        for step, note in self.damaged.items():
            if step not in self._announced:
                self._announced.add(step)
                logging.warning("%s.", note)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation accuracy among the kept checkpoints (the latest
        of equals), None if none has metrics."""
        return self.manager.best_step()

    def metrics(self, step: int) -> dict[str, float] | None:
        return self.manager.metrics(step)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def _damage_summary(self) -> str:
        """'step 32 (<reason>); step 24 (<reason>)', one line."""
        return "; ".join(f"step {step} ({reason})" for step, reason in self._reasons.items())

    def damaged_step_error(self, which: str) -> DamagedCheckpointError:
        """The error for `--checkpoint=<which>` naming a damaged step: the damage and the steps
        to use instead."""
        steps = self.all_steps()
        if not steps:
            return self._none_intact_error()
        return DamagedCheckpointError(f"--checkpoint={which}: {self.damaged[int(which)]}. Evaluate an "
                                      f"intact step instead: --checkpoint=latest, best or one of {steps}.")

    def _none_intact_error(self) -> DamagedCheckpointError:
        return DamagedCheckpointError(
            f"No intact checkpoint in {self.directory} (every one is damaged: {self._damage_summary()}). "
            "Restore them from a backup, or train again: train.py in this --workdir sets them aside "
            "and starts afresh.")

    def resolve(self, which: str) -> int:
        """'latest', 'best' or a step number -> an intact step, or a clear error."""
        steps = self.all_steps()
        if not steps:
            if self.damaged:
                raise self._none_intact_error()
            raise MissingFileError(f"No checkpoint in {self.directory}: train first with "
                                   "train.py --workdir pointing at this run.")
        if which == "latest":
            return steps[-1]
        if which == "best":
            step = self.best_step()
            if step is None:
                raise MissingFileError(f"No checkpoint with validation metrics for --checkpoint=best; "
                                       f"saved steps: {steps}.")
            return step
        if which.isdigit() and int(which) in self.damaged:
            raise self.damaged_step_error(which)
        if not which.isdigit() or int(which) not in steps:
            raise ConfigError(f"--checkpoint={which!r}: use 'best', 'latest' or one of the "
                              f"saved steps {steps}.")
        return int(which)

    def _read(self, step: int, **items: Any) -> Any:
        """Restores `items` of `step`; a read that fails from damage sets the step aside and
        raises DamagedCheckpointError (callers may try another step)."""
        try:
            with _draining_reads():
                return self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:
            if not _is_damage(error):
                raise
            self._set_aside(step, _describe(error))
            self.manager.reload()
            raise DamagedCheckpointError(self.damaged[step]) from None

    def saved_config(self, step: int) -> dict[str, Any]:
        """The config checkpoint `step` was trained with."""
        return dict(self._read(step, config=ocp.args.JsonRestore())["config"])

    def save(self, step: int, state: Any, config: ml_collections.ConfigDict,
             metrics: Mapping[str, float] | None = None) -> None:
        state_dict = flax.serialization.to_state_dict(state)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state_dict),
            config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))),
            metrics=dict(metrics) if metrics else None)

    def restore(self, step: int, target: Any) -> Any:
        """Restores `step` into the structure, shapes and shardings of `target` (a state)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                flax.serialization.to_state_dict(target))
        restored = self._read(step, state=ocp.args.StandardRestore(abstract))["state"]
        return flax.serialization.from_state_dict(target, restored)

    def restore_newest(self, target: Any) -> tuple[int, Any]:
        """(step, state) of the newest intact checkpoint, setting damaged newer ones aside;
        (0, target) when there is none. Raises DamagedCheckpointError when every checkpoint is
        damaged (they are all set aside: running again starts from scratch)."""
        while self.all_steps():
            step = self.all_steps()[-1]
            with contextlib.suppress(DamagedCheckpointError):
                restored = self.restore(step, target)
                self.announce_damaged()
                return step, restored
        self.check_not_all_damaged()
        return 0, target

    def check_not_all_damaged(self) -> None:
        """Raises DamagedCheckpointError when checkpoints were found, all damaged (they are set
        aside, so that running again starts from scratch only when asked to)."""
        if self.damaged and not self.all_steps():
            raise DamagedCheckpointError(
                f"Every checkpoint in {self.directory} is damaged ({self._damage_summary()}); they were "
                f"moved to {self.damaged_directory}. Restore them from a backup, or run the same command "
                "again to train from scratch.")

    def restore_parts(self, step: int, abstract: Mapping[str, Any]) -> dict[str, Any]:
        """Only the top-level entries of `abstract` (e.g. {'params', 'batch_stats'}: shapes,
        dtypes and shardings) from checkpoint `step`; nothing else of it is read."""
        restored = self._read(step, state=ocp.args.PyTreeRestore(
            item=dict(abstract), restore_args=ocp.checkpoint_utils.construct_restore_args(dict(abstract)),
            partial_restore=True))["state"]
        return dict(restored)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes `workdir/config.json` for people to read (process 0 only); checks read the config
    stored in each checkpoint instead."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        epath.Path(workdir, "config.json").write_text(config.to_json_best_effort(indent=2))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def differences(saved: Mapping[str, Any], config: ml_collections.ConfigDict, sections: tuple[str, ...],
                exempt: tuple[str, ...] = ()) -> list[str]:
    """'field: checkpoint X, config Y' for every field under `sections` that differs."""
    current = json.loads(config.to_json_best_effort())
    old = _flatten({s: saved[s] for s in sections if s in saved})
    new = _flatten({s: current[s] for s in sections if s in current})
    return [f"{key}: checkpoint {old.get(key)!r}, config {new.get(key)!r}"
            for key in sorted(set(old) | set(new))
            if key not in exempt and old.get(key) != new.get(key)]


def check_same_model(saved: Mapping[str, Any], config: ml_collections.ConfigDict, step: int,
                     directory: str) -> None:
    """Raises a ConfigError listing the differences when checkpoint `step` holds another model."""
    problems = differences(saved, config, MODEL_SECTIONS)
    if problems:
        raise ConfigError(
            f"Checkpoint step {step} in {directory} was trained with a different model config: "
            + "; ".join(problems) + ". Use the config the run was trained with, or another --workdir.")


def check_same_run(saved: Mapping[str, Any], config: ml_collections.ConfigDict, step: int,
                   directory: str) -> None:
    """Raises a ConfigError when resuming would change the data order or the schedule."""
    problems = differences(saved, config, RUN_SETTINGS, _RUN_SETTINGS_EXEMPT)
    if problems:
        raise ConfigError(
            f"Cannot resume from step {step} in {directory}: the data order or the learning-rate "
            "schedule would change (" + "; ".join(problems) + "). Resume with the settings the run "
            "was trained with, or start a new run with another --workdir.")


def check_same_order(saved: Mapping[str, Any], step: int, directory: str, process_count: int = 1) -> None:
    """Raises a ConfigError when checkpoint `step` was saved before both feeds read the example
    order of `data/order.py` (its config has `dataset.shuffle_buffer`) and that order differs
    from the one it was trained in: always on the host feed (tf.data's shuffle buffer), and on
    the device feed with several processes (a single process's device order is unchanged)."""
    if "shuffle_buffer" not in (saved.get("dataset") or {}):
        return
    feed = (saved.get("input") or {}).get("feed", "host")
    if feed == "host" or process_count > 1:
        raise ConfigError(
            f"Cannot resume from step {step} in {directory}: the run was trained on the {feed} feed "
            f"{'with a shuffle buffer' if feed == 'host' else 'with one order for all processes'}, before "
            "both feeds read the example order of data/order.py, so it cannot continue in its order: "
            "start a new run in another --workdir (or finish it with the code it was started with).")


def resume_point(ckpts: Checkpoints, config: ml_collections.ConfigDict) -> int:
    """The step training will resume from (0: afresh), after checking that the newest intact
    checkpoint holds this model and this run's data order and schedule."""
    while ckpts.all_steps():
        step = ckpts.all_steps()[-1]
        try:
            saved = ckpts.saved_config(step)
        except DamagedCheckpointError:
            continue  # set aside; the next newest is checked
        ckpts.announce_damaged()
        check_same_model(saved, config, step, ckpts.directory)
        check_same_run(saved, config, step, ckpts.directory)
        check_same_order(saved, step, ckpts.directory, jax.process_count())
        return step
    ckpts.check_not_all_damaged()
    return 0


def saved_feed(ckpts: Checkpoints, step: int) -> str:
    """The feed ('host' or 'device') checkpoint `step`'s run was trained with; runs from before
    the feeds were configurable read the host's pipeline."""
    return (ckpts.saved_config(step).get("input") or {}).get("feed", "host")


def save_evaluated(ckpts: Checkpoints, step: int, state: Any, config: ml_collections.ConfigDict,
                   accuracy: float, eval_every: int) -> str | None:
    """Saves an evaluated step with its validation accuracy; returns the early-stop message when
    `config.early_stop_patience` evaluations have passed without improvement, else None."""
    ckpts.save(step, state, config, {METRIC: accuracy})
    best = ckpts.best_step()
    if config.early_stop_patience and best is not None and (step - best) // eval_every >= config.early_stop_patience:
        return f"Early stop at step {step}: no improvement since step {best}."
    return None


def save_interrupted(ckpts: Checkpoints, step: int, state: Any, config: ml_collections.ConfigDict,
                     eval_every: int, signal: str | None) -> str:
    """Saves the step a signal stopped at (unless an evaluation just saved it); returns the message."""
    if step % eval_every:
        ckpts.save(step, state, config)
    return (f"Interrupted ({signal}) at step {step}: checkpoint saved in {ckpts.directory}; run the same "
            "command again to resume.")
