"""`eval.py`'s `evaluate_checkpoint`: restore a checkpoint, evaluate a split with the one
evaluation loop (`metrics.run_evaluation`: whole splits, padded and masked, nothing dropped) over
either feed, run the evaluators the config asks for (`config.evals`, see `evaluators.py`) and
write the results; and `Restorer`, which reads a run's checkpoints without writing there."""

import json
import os
from typing import Any, Mapping

import jax
import ml_collections
from absl import logging

from wrna_jax import checkpoint, distributed, evaluators, feeds, parallel, validation, workdir
from wrna_jax.errors import ConfigError, DamagedCheckpointError
from wrna_jax.metrics import make_eval_step, run_evaluation
from wrna_jax.models import create_model
from wrna_jax.state import abstract_variables


class Restorer:
    """Reads checkpoints of a workdir for evaluation, writing nothing there (training may be
    running in it): `--checkpoint` resolved to an intact step whose stored config holds the
    same model; for 'latest' and 'best', a damaged step is reported and the next one used."""

    def __init__(self, config: ml_collections.ConfigDict, workdir_path: str, which: str):
        self.config, self.which = config, which
        self.ckpts = checkpoint.Checkpoints(workdir_path, keep=config.checkpoint_keep, read_only=True)
        self._reported: set[int] = set()
        self.step = 0
        self._pick()

    def _pick(self) -> None:
        """Sets `step` to the one `--checkpoint` names, past damaged ones for 'latest' and
        'best'; reports each damaged step and the one used instead."""
        while True:
            self.step = self.ckpts.resolve(self.which)
            try:
                checkpoint.check_same_model(self.ckpts.saved_config(self.step), self.config, self.step,
                                            self.ckpts.directory)
            except DamagedCheckpointError:
                if self.which not in ("latest", "best"):
                    raise self.ckpts.damaged_step_error(self.which) from None
                continue
            self._report()
            return

    def _report(self) -> None:
        """Says which step is used instead of each damaged one found so far."""
        for step, note in self.ckpts.damaged.items():
            if step not in self._reported:
                self._reported.add(step)
                print(f"{note[0].upper()}{note[1:]}: evaluating step {self.step} instead "
                      f"(--checkpoint={self.which}).", flush=True)

    def variables(self, model: Any, input_shape: tuple[int, ...], mesh: jax.sharding.Mesh) -> tuple[int, dict]:
        """(step, {'params', 'batch_stats'}) replicated on the mesh; the optimiser state is not read."""
        replicated = parallel.replicated(mesh)
        abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                                abstract_variables(model, input_shape))
        while True:
            try:
                return self.step, self.ckpts.restore_parts(self.step, abstract)
            except DamagedCheckpointError:  # recorded by Checkpoints
                if self.which not in ("latest", "best"):
                    raise self.ckpts.damaged_step_error(self.which) from None
                self._pick()

    def close(self) -> None:
        self.ckpts.close()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir_path: str, which: str = "best",
                        split: str | None = None, output_dir: str | None = None) -> dict[str, Any]:
    """eval.py: restore a checkpoint, evaluate `split` (default: the dataset's test split), run
    the configured evaluators, write eval_results.json and the figures to `output_dir`
    (default <workdir>/eval_<which>). The workdir, the checkpoint and the output directory are
    checked before the data is prepared."""
    validation.check_config(config)
    model = create_model(config)
    mesh = parallel.create_mesh(config.num_devices)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    workdir.check_run_exists(workdir_path)
    restorer = Restorer(config, workdir_path, which)
    try:
        output_dir = output_dir or os.path.join(workdir_path, f"eval_{which}")
        if jax.process_index() == 0:
            workdir.check_writable(output_dir, "--output_dir")
        with distributed.process_0_first("preparing the dataset"):
            data = feeds.create_feed(config, mesh, (split or "test_split",), announce=logging.info)
        split = split or data.split("test_split")
        if not data.has_split(split):
            raise ConfigError(f"--split={split!r}: the dataset has splits {data.split_names()}.")
        step, variables = restorer.variables(model, data.input_shape, mesh)
    finally:
        restorer.close()
    step_fn = make_eval_step(model, mesh)
    results: dict[str, Any] = {"checkpoint_step": step, "split": split, **run_evaluation(
        step_fn, variables, data.eval_batches(split, config, mesh), model.hypothesis_names,
        model.num_classes)}
    logging.info("Step %d, %s: accuracy %.4f", step, split, results["accuracy"])
    context = evaluators.Context(config=config, model=model, mesh=mesh, data=data, split=split,
                                 variables=variables, step_fn=step_fn, output_dir=output_dir,
                                 results=dict(results))
    results["figures"], results["skipped"] = {}, {}
    for name, settings in config.evals.items():
        produced = evaluators.evaluator(name)(context, settings)
        results["figures"].update(produced.pop("figures", {}))
        results["skipped"].update(produced.pop("skipped", {}))
        results.update(produced)
    results["results_json"] = os.path.join(output_dir, "eval_results.json")
    if jax.process_index() == 0:
        with open(results["results_json"], "w") as f:
            json.dump(results, f, indent=2)
    return results


# The results that name a table an evaluator wrote (listed by `summary` with the figures).
TABLE_FILES = ("accuracy_vs_distractors_md", "per_class_accuracy_csv", "most_confused_md")


def summary(results: Mapping[str, Any]) -> str:
    """eval.py's console report of `evaluate_checkpoint`'s results: accuracy, per-hypothesis
    accuracy and gate, the distractor sweep, the most confused classes, skipped evaluators and
    the files written; everything else (the confusion matrix, ...) is in eval_results.json."""
    def percent(value: float) -> str:
        return f"{100 * value:.2f}%"

    head = f"accuracy {percent(results['accuracy'])}"
    if "top5_accuracy" in results:
        head += f", top-5 {percent(results['top5_accuracy'])}"
    lines = [f"Step {results['checkpoint_step']}, {results['split']} ({results['num_examples']} examples): "
             f"{head}, loss {results['loss']:.4f}"]
    hypotheses = results.get("hypothesis_accuracy", {})
    if hypotheses:
        width = max(len("hypothesis"), *(len(name) for name in hypotheses))
        lines.append(f"  {'hypothesis':<{width}}  accuracy  mean gate")
        gates = results.get("mean_gates", {})
        lines += [f"  {name:<{width}}  {percent(acc):>8}  {gates[name]:9.3f}" if name in gates
                  else f"  {name:<{width}}  {percent(acc):>8}" for name, acc in hypotheses.items()]
    sweep = results.get("accuracy_vs_distractors")
    if sweep:
        lines.append("  distractors: " + ", ".join(f"D={d} {percent(acc)}" for d, acc in sweep.items()))
    confused = results.get("most_confused", [])[:3]
    if confused:
        lines.append("  most confused: " + "; ".join(
            f"{p['true']} as {p['predicted']} {p['count']}x" for p in confused))
    lines += [f"  {name} skipped: {why}" for name, why in results.get("skipped", {}).items()]
    written = [results["results_json"], *results.get("figures", {}).values(),
               *(results[key] for key in TABLE_FILES if key in results)]
    directory = os.path.dirname(results["results_json"])
    lines.append(f"Wrote to {directory}: " + ", ".join(
        os.path.relpath(path, directory) if os.path.dirname(path) == directory else path for path in written))
    return "\n".join(lines)
