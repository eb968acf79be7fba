"""Orbax checkpoints in the workdir: the latest N plus the best by validation accuracy.

Layout: `workdir/config.json` (the run's config) and `workdir/checkpoints/<step>/`. Orbax
writes each checkpoint to a temporary directory and renames it when complete, so a run killed
while saving leaves the previous checkpoints intact and the next start resumes from them.
"""

import json
import os
from typing import Any, Mapping

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

METRIC = "accuracy"
# Config sections that change the model's parameters: a checkpoint only fits the same ones.
MODEL_SECTIONS = ("model", "attention")


def _metric(metrics: Mapping[str, float]) -> float:
    return metrics[METRIC]


def has_checkpoints(workdir: str) -> bool:
    """Whether `workdir` holds a finished checkpoint (orbax names them by step; unfinished ones
    carry a temporary suffix), without creating anything."""
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


class Checkpoints:
    """Saves and restores the training state (any pytree of arrays) with validation metrics."""

    def __init__(self, workdir: str, keep: int = 2):
        if keep < 1:
            raise ValueError(f"checkpoint_keep={keep}: keep at least 1 latest checkpoint.")
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        policy = policies.AnyPreservationPolicy([
            policies.LatestN(keep),
            policies.BestN(get_metric_fn=_metric, n=1,
                           keep_checkpoints_without_metrics=False),
        ])
        self.manager = ocp.CheckpointManager(
            self.directory,
            # best_fn makes orbax store the metrics with each step; the policy decides what stays.
            options=ocp.CheckpointManagerOptions(preservation_policy=policy, best_fn=_metric,
                                                 best_mode="max", create=True,
                                                 cleanup_tmp_directories=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation accuracy among the kept checkpoints (the latest
        of equals), None if none has metrics."""
        return self.manager.best_step()

    def metrics(self, step: int) -> dict[str, float] | None:
        return self.manager.metrics(step)

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def resolve(self, which: str) -> int:
        """'latest', 'best' or a step number -> an existing step, or a clear error."""
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"No checkpoint in {self.directory}: train first with "
                                    "train.py --workdir pointing at this run.")
        step = {"latest": self.latest_step, "best": self.best_step}.get(which, lambda: None)()
        if which not in ("latest", "best"):
            if not which.isdigit() or int(which) not in steps:
                raise ValueError(f"--checkpoint={which!r}: use 'best', 'latest' or one of the "
                                 f"saved steps {steps}.")
            step = int(which)
        if step is None:
            raise ValueError(f"No checkpoint with validation metrics for --checkpoint={which!r}; "
                             f"saved steps: {steps}.")
        return step

    def save(self, step: int, state: Any, metrics: Mapping[str, float] | None = None) -> None:
        state_dict = flax.serialization.to_state_dict(state)
        self.manager.save(step, args=ocp.args.StandardSave(state_dict),
                          metrics=dict(metrics) if metrics else None)

    def restore(self, step: int, target: Any) -> Any:
        """Restores `step` into the structure, shapes and shardings of `target` (a state)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                flax.serialization.to_state_dict(target))
        restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return flax.serialization.from_state_dict(target, restored)

    def restore_parts(self, step: int, abstract: Mapping[str, Any]) -> dict[str, Any]:
        """Only the top-level entries of `abstract` (e.g. {'params', 'batch_stats'}: shapes,
        dtypes and shardings) from checkpoint `step`; nothing else of it is read."""
        restored = self.manager.restore(step, args=ocp.args.PyTreeRestore(
            item=dict(abstract), restore_args=ocp.checkpoint_utils.construct_restore_args(dict(abstract)),
            partial_restore=True))
        return dict(restored)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Writes `workdir/config.json` (process 0 only)."""
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def config_mismatches(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """'section.key: checkpoint X, config Y' for every model-shaping field that differs."""
    current = json.loads(config.to_json_best_effort())
    problems = []
    for section in MODEL_SECTIONS:
        old, new = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                problems.append(f"{section}.{key}: checkpoint {old.get(key)!r}, config {new.get(key)!r}")
    return problems


def check_compatible(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Raises a ValueError listing the differences when the workdir was trained with another model."""
    saved = load_config(workdir)
    if saved is None:
        return
    problems = config_mismatches(saved, config)
    if problems:
        raise ValueError(
            f"The checkpoints in {workdir} were made with a different model config:\n  "
            + "\n  ".join(problems)
            + "\nUse the config the run was trained with, or another --workdir.")
