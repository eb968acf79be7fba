"""SIGTERM during `train.py` (what SLURM and cloud schedulers send): a checkpoint at the current
step, exit status 0, and a resumed run that ends with the parameters of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import tiny_train_config
from test_train import restore_params
from wrna_jax import checkpoint
from wrna_jax.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 4  # 8 steps each: 32 steps, evaluated and checkpointed every 8
FLAGS = ["--config.dataset.num_train=512", "--config.dataset.num_validation=96",
         "--config.dataset.num_test=80", "--config.dataset.sweep_distractors=(4,16)",
         "--config.batch_size=64", "--config.eval_batch_size=32", f"--config.num_epochs={EPOCHS}",
         "--config.schedule.boundaries_epochs=(1,)", "--config.attention.depth=2",
         "--config.num_mask_examples=3", "--config.log_every_steps=4"]


def start_training(workdir: str, data_dir: str) -> subprocess.Popen:
    # The test session's compilation cache: the subprocess reuses what the in-process run compiled.
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    return subprocess.Popen(
        ["timeout", "300", sys.executable, os.path.join(ROOT, "train.py"), "--config=configs/cluttered_mnist.py",
         f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}", *FLAGS],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_saves_exits_cleanly_and_the_rerun_matches_an_uninterrupted_run(data_dir, tmp_path):
    config = tiny_train_config(data_dir)
    config.num_epochs = EPOCHS
    whole = train_and_evaluate(config, str(tmp_path / "whole"))
    assert whole["step"] == 32 and not whole["preempted"]

    workdir = str(tmp_path / "preempted")
    proc = start_training(workdir, data_dir)
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.monotonic() + 280
    while not os.path.exists(metrics) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first log line (step 4) means the training loop is running
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    saved = checkpoint.Checkpoints(workdir).latest_step()
    assert f"Preempted (SIGTERM) at step {saved}: checkpoint saved in" in out + err
    assert "run the same command again to resume" in out + err
    assert 4 <= saved < 32, saved
    logged = [json.loads(line)["step"] for line in open(metrics)]
    assert logged[-1] == saved  # the partial logging window is written before stopping

    resumed = train_and_evaluate(config, workdir)  # what rerunning train.py calls (test_cli)
    assert resumed["step"] == 32 and not resumed["preempted"]
    assert resumed["accuracy"] == whole["accuracy"]
    _, params_a, stats_a = restore_params(config, str(tmp_path / "whole"))
    step, params_b, stats_b = restore_params(config, workdir)
    assert step == 32
    for a, b in zip(jax.tree.leaves((params_a, stats_a)), jax.tree.leaves((params_b, stats_b))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    final = [json.loads(line) for line in open(metrics) if "val_accuracy" in line][-1]
    assert final["step"] == 32 and final["val_accuracy"] == whole["accuracy"]
