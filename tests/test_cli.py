"""train.py and eval.py as a user runs them: a run stopped by SIGTERM and resumed by the same
command ends exactly where an uninterrupted run ends, and eval.py reproduces its numbers."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, TINY_FLAGS, TINY_RUN_EPOCHS, read_png, restore, spawn
from wrna_jax import checkpoint, evaluate

EPOCHS = TINY_RUN_EPOCHS


def command(script: str, workdir: str, data_dir: str, *extra: str) -> list[str]:
    return [script, "--config=configs/cluttered_mnist.py", f"--workdir={workdir}",
            f"--config.dataset.data_dir={data_dir}", *TINY_FLAGS, f"--config.num_epochs={EPOCHS}", *extra]


def run(args: list[str]) -> subprocess.CompletedProcess:
    proc = spawn(args)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_sigterm_then_the_same_command_ends_like_an_uninterrupted_run_and_eval_reproduces_it(
        tiny_run, tmp_path):
    config, whole_dir, whole = tiny_run
    data_dir = config.dataset.data_dir  # prepared by the fixture: only read here
    assert whole["step"] == 32 and not whole["preempted"]
    workdir = str(tmp_path / "run")
    metrics = os.path.join(workdir, "metrics.jsonl")

    # SIGTERM (what SLURM and cloud schedulers send) once the loop runs: a checkpoint, exit 0.
    proc = spawn(command("train.py", workdir, data_dir))
    deadline = time.monotonic() + 280
    while not os.path.exists(metrics) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first log line (step 4) means the training loop is running
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    saved = checkpoint.Checkpoints(workdir).latest_step()
    assert 4 <= saved < 32, saved
    assert f"Preempted (SIGTERM) at step {saved}: checkpoint saved in" in out + err
    assert "run the same command again to resume" in out + err
    assert [json.loads(line)["step"] for line in open(metrics)][-1] == saved  # partial window logged
    # A save killed half-way leaves orbax's temporary directory behind: ignored on resume.
    os.makedirs(os.path.join(workdir, "checkpoints", f"{saved + 8}.orbax-checkpoint-tmp-1234", "default"))

    resumed = run(command("train.py", workdir, data_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from step {saved}" in resumed.stderr
    _, params_a, stats_a = restore(config, whole_dir)
    step, params_b, stats_b = restore(config, workdir)
    assert step == 32
    # Same program, same data order and augmentation from step `saved` on: bit-identical.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path((params_a, stats_a)),
                            jax.tree.leaves((params_b, stats_b))):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    log = [json.loads(line) for line in open(metrics)]
    lrs = {r["step"]: r["learning_rate"] for r in log if "learning_rate" in r}
    assert lrs[4] == pytest.approx(0.1) and lrs[32] == pytest.approx(0.01)  # x0.1 after epoch 1
    final_val = [r for r in log if "val_accuracy" in r][-1]
    assert final_val["step"] == 32 and final_val["val_accuracy"] == whole["accuracy"]
    assert any("train_loss" in r for r in log if r["step"] == 4) and any("steps_per_sec" in r for r in log)
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
    read_png(os.path.join(workdir, "training_curves.png"), size=(1320, 330))  # 3 panels of 4 x 3 in

    evaluated = run(command("eval.py", workdir, data_dir, "--checkpoint=latest", "--split=validation"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    out_dir = os.path.join(workdir, "eval_latest")
    results = json.load(open(os.path.join(out_dir, "eval_results.json")))
    assert results["checkpoint_step"] == 32 and results["num_examples"] == 96
    assert results["accuracy"] == final_val["val_accuracy"]
    assert set(results["hypothesis_accuracy"]) == {"backbone", "conv5/head0", "conv5/head1",
                                                   "conv4/head0", "conv4/head1"}
    assert abs(sum(results["mean_gates"].values()) - 1) < 1e-5 * len(results["mean_gates"])
    assert "top5_accuracy" in results and set(results["accuracy_vs_distractors"]) == {"4", "16"}
    read_png(os.path.join(out_dir, "attention_masks.png"), size=(800, 510))  # 3 canvases x (1 + 4 heads)
    read_png(os.path.join(out_dir, "accuracy_vs_distractors.png"), size=(540, 384))
    table = open(os.path.join(out_dir, "accuracy_vs_distractors.md")).read()
    assert table.startswith("| model | D=4 | D=16 |")
    assert f"{100 * results['accuracy_vs_distractors']['16']:.2f}" in table

    steps = checkpoint.Checkpoints(workdir).all_steps()  # the latest 2 and the best
    assert steps[-2:] == [24, 32] and len(steps) in (2, 3)
    with pytest.raises(ValueError, match=re.escape(f"--checkpoint='7': use 'best', 'latest' or one of "
                                                   f"the saved steps {steps}")):
        evaluate.evaluate_checkpoint(config, workdir, "7")


def test_train_rejects_a_bad_override_before_work(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                             "--config=configs/cluttered_mnist.py:baseline,typo", f"--workdir={tmp_path}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Unknown config argument(s) ['typo']" in result.stderr
