"""The metrics of the steps: the evaluation step's masked sums over batches (padding counts
nowhere), the one evaluation loop over a split's batches (`run_evaluation`: validation during
training, eval.py and its evaluators) and the accuracy, loss, per-hypothesis accuracy and mean
gate weights it gives; the training steps' logged means and their check for a non-finite step.
Imports only JAX and the models (no TensorFlow).
"""

import functools
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from wrna_jax import parallel
from wrna_jax.errors import TrainingDivergedError
from wrna_jax.models import ModelOutput


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


def eval_step(variables: Any, batch: Mapping[str, jax.Array], *, model: Any) -> tuple[dict, ModelOutput]:
    """Masked sums over one batch of the model with `variables` ({'params', 'batch_stats'});
    padding examples (mask False) count nowhere."""
    out = multi_crop_output(model, variables, batch["image"])
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
        # confusion[i, j]: examples of class i predicted as j
        "confusion": jnp.einsum("bi,bj->ij", jax.nn.one_hot(labels, out.log_probs.shape[-1]) * mask[:, None],
                                jax.nn.one_hot(jnp.argmax(out.log_probs, -1), out.log_probs.shape[-1])),
    }
    return sums, out


def make_eval_step(model: Any, mesh: jax.sharding.Mesh):
    """`eval_step` compiled for the mesh: batch sharded, variables and sums replicated."""
    return jax.jit(functools.partial(eval_step, model=model),
                   in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))


def variables_of(state: Any) -> dict[str, Any]:
    """What evaluation reads of a training state."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def metrics_from_sums(totals: Mapping[str, Any], hypothesis_names: tuple[str, ...],
                      num_classes: int) -> dict[str, Any]:
    """The metrics of the summed `eval_step` outputs of a whole split."""
    totals = jax.device_get(totals)
    count = float(totals["count"])
    metrics: dict[str, Any] = {
        "num_examples": int(count),
        "accuracy": float(totals["correct"]) / count,
        "loss": float(totals["nll"]) / count,
        "hypothesis_accuracy": {name: float(c) / count for name, c in
                                zip(hypothesis_names, np.asarray(totals["hypothesis_correct"]))},
        "mean_gates": {name: float(g) / count for name, g in zip(hypothesis_names, np.asarray(totals["gate_sum"]))},
    }
    if num_classes > 5:
        metrics["top5_accuracy"] = float(totals["correct_top5"]) / count
    metrics["confusion"] = np.rint(np.asarray(totals["confusion"])).astype(int).tolist()
    return metrics


def _kept(ckpts: Any) -> str:
    step = ckpts.latest_step()
    return (f"the last good checkpoint, step {step}, is kept in {ckpts.directory}" if step
            else "no checkpoint had been saved yet")


def check_finite(fetched: list[dict[str, Any]], ckpts: Any) -> None:
    """Raises on the first step with a non-finite loss, gradient or BatchNorm statistic among
    fetched step metrics (train_step leaves the state of such a step unchanged and reports it)."""
    bad = [int(m["nonfinite"]) for m in fetched if int(m["nonfinite"]) >= 0]
    if bad:
        ckpts.wait()
        raise TrainingDivergedError(
            f"The loss, the gradients or the BatchNorm statistics became NaN or infinite at step "
            f"{bad[0] + 1}; training stopped without saving that state, and {_kept(ckpts)}. Lower "
            "optimizer.learning_rate or check the input data.")


def summarise_steps(pending: list[dict[str, jax.Array]], ckpts: Any) -> dict[str, float]:
    """Means of the step metrics since the last log; raises on the first non-finite step."""
    fetched = jax.device_get(pending)
    check_finite(fetched, ckpts)
    keys = ("loss", "nll", "regularizer", "accuracy")
    summary = {f"train_{k}": float(np.mean([m[k] for m in fetched])) for k in keys}
    summary["learning_rate"] = float(fetched[-1]["learning_rate"])
    return summary


def run_evaluation(step_fn: Any, variables: Any, batches: Iterable[Mapping[str, jax.Array]],
                   hypothesis_names: tuple[str, ...], num_classes: int) -> dict[str, Any]:
    """Runs `step_fn` over every batch and turns the sums into metrics."""
    totals = None
    for batch in batches:
        sums, _ = step_fn(variables, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("The evaluation split yielded no batches.")
    return metrics_from_sums(totals, hypothesis_names, num_classes)
