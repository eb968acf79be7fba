"""train.py and eval.py as a user runs them: subprocesses, files written, results reproduced."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.dataset.num_train=512", "--config.dataset.num_validation=96",
        "--config.dataset.num_test=80", "--config.dataset.sweep_distractors=(4,16)",
        "--config.batch_size=64", "--config.eval_batch_size=32", "--config.num_epochs=2",
        "--config.schedule.boundaries_epochs=(1,)", "--config.attention.depth=2",
        "--config.num_mask_examples=3", "--config.log_every_steps=4"]


def run(script: str, *args: str, cache: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)


def test_train_then_eval_reproduces_the_logged_accuracy(data_dir, tmp_path):
    workdir, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    common = ["--config=configs/cluttered_mnist.py", f"--workdir={workdir}",
              f"--config.dataset.data_dir={data_dir}", *TINY]
    trained = run("train.py", *common, cache=cache)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "validation accuracy" in trained.stderr + trained.stdout
    for name in ("config.json", "metrics.jsonl", "training_curves.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
    log = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    final_val = [r for r in log if "val_accuracy" in r][-1]
    assert final_val["step"] == 16 and {"train_loss", "steps_per_second"} <= set(log[0])

    evaluated = run("eval.py", *common, "--checkpoint=latest", "--split=validation", cache=cache)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    out_dir = os.path.join(workdir, "eval_latest")
    results = json.load(open(os.path.join(out_dir, "eval_results.json")))
    assert results["checkpoint_step"] == 16 and results["num_examples"] == 96
    assert results["accuracy"] == final_val["val_accuracy"]
    assert set(results["hypothesis_accuracy"]) == {"backbone", "conv5/head0", "conv5/head1",
                                                   "conv4/head0", "conv4/head1"}
    assert abs(sum(results["mean_gates"].values()) - 1) < 1e-4
    assert "top5_accuracy" in results and set(results["accuracy_vs_distractors"]) == {"4", "16"}
    for figure in ("attention_masks.png", "accuracy_vs_distractors.png"):
        assert os.path.getsize(os.path.join(out_dir, figure)) > 1000, figure
    table = open(os.path.join(out_dir, "accuracy_vs_distractors.md")).read()
    assert table.startswith("| model | D=4 | D=16 |")
    assert f"{100 * results['accuracy_vs_distractors']['16']:.2f}" in table

    wrong = run("eval.py", *common, "--checkpoint=7", cache=cache)
    assert wrong.returncode != 0 and "--checkpoint='7': use 'best', 'latest' or one of the saved steps [8, 16]" in wrong.stderr


def test_train_rejects_a_bad_override_before_work(tmp_path):
    result = run("train.py", "--config=configs/cluttered_mnist.py:baseline,typo", f"--workdir={tmp_path}",
                 cache=str(tmp_path / "cache"))
    assert result.returncode != 0 and "Unknown config argument(s) ['typo']" in result.stderr
