"""Multi-process runs on JAX's distributed runtime (localhost, gloo): train.py and eval.py on two
processes, start-up settings, and the error of a process whose peer never arrives. Every
subprocess is bounded by a timeout. The numerical comparison of two processes against one is in
test_parallel.py."""

import json
import os
import time

import pytest

from conftest import finish, free_port, read_png, spawn
from configs import default
from wrna_jax import distributed


def test_a_process_whose_peer_never_arrives_fails_clearly_within_the_timeout(tmp_path):
    started = time.monotonic()
    proc = spawn(["train.py", "--config=configs/cluttered_mnist.py", f"--workdir={tmp_path / 'run'}",
                  f"--config.distributed.coordinator_address=localhost:{free_port()}",
                  "--config.distributed.num_processes=2", "--config.distributed.process_id=0",
                  "--config.distributed.initialization_timeout=3"])
    out, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, (out + err)[-3000:]
    assert "process 0 of 2: not all processes joined the coordinator at localhost:" in err
    assert "initialization_timeout=3 s" in err and "Check failure" not in err
    assert elapsed < 60 and not (tmp_path / "run").exists()


def fields(**settings):
    """config.distributed of configs/default.py with `settings` changed."""
    return {**default.get_config().distributed.to_dict(), **settings}


def test_settings_from_config_environment_and_schedulers():
    assert distributed.settings_for(fields(), {}) is None
    assert distributed.settings_for(fields(num_processes=1, process_id=0), {}) is None
    explicit = distributed.settings_for(fields(coordinator_address="10.0.0.1:1234", num_processes=4,
                                               process_id=3, local_device_ids="0,1",
                                               initialization_timeout=60), {})
    assert explicit == dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                            local_device_ids=[0, 1], initialization_timeout=60)
    from_env = distributed.settings_for(fields(), {"JAX_COORDINATOR_ADDRESS": "h:1",
                                                   "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
    assert (from_env["coordinator_address"], from_env["num_processes"], from_env["process_id"]) == ("h:1", 2, 1)
    slurm = {"SLURM_JOB_ID": "77", "SLURM_PROCID": "2", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8"}
    detected = distributed.settings_for(fields(), slurm)
    assert detected["num_processes"] is None and detected["coordinator_address"] is None  # JAX's plugin
    assert distributed.settings_for(fields(), {**slurm, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert distributed.settings_for(fields(), {"OMPI_COMM_WORLD_SIZE": "2"}) == dict(  # JAX's Open MPI plugin
        coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None,
        initialization_timeout=300)
    with pytest.raises(ValueError, match=r"needs all of config.distributed.coordinator_address .* got "
                                         r"coordinator_address=None, num_processes=2, process_id=0"):
        distributed.settings_for(fields(num_processes=2, process_id=0), {})
    with pytest.raises(ValueError, match=r"process_id=2: must be in 0..1 for num_processes=2"):
        distributed.settings_for(fields(coordinator_address="h:1", num_processes=2, process_id=2), {})
    with pytest.raises(ValueError, match=r"local_device_ids='a,b': use comma-separated device numbers"):
        distributed.settings_for(fields(coordinator_address="h:1", num_processes=2, process_id=0,
                                        local_device_ids="a,b"), {})


def test_train_py_and_eval_py_across_two_processes(tmp_path):
    """The user's commands on two processes x 2 devices: each process reads half of every split,
    process 0 alone writes the logs and figures, the checkpoints written together restore for
    evaluation (eval.py's main, after train.py's in the same two processes), and eval.py counts
    every example of the split exactly once."""
    common = ["--config=configs/cluttered_mnist.py", f"--workdir={tmp_path / 'run'}",
              f"--config.dataset.data_dir={tmp_path / 'data'}", "--config.dataset.cluttered_mnist.num_train=256",
              "--config.dataset.cluttered_mnist.num_validation=96", "--config.dataset.cluttered_mnist.num_test=80",
              "--config.batch_size=64", "--config.eval_batch_size=32", "--config.num_epochs=2",
              "--config.attention.depth=1", "--config.log_every_steps=2",
              "--config.evals.distractor_sweep.distractors=()", "--config.evals.attention_masks.examples=3",
              "--config.distributed.num_processes=2", "--config.distributed.initialization_timeout=120"]

    # Both commands in each process one after the other (tests/workers.py), as the shell would
    # run them, without paying JAX's and TensorFlow's start-up twice.
    port = f"--config.distributed.coordinator_address=localhost:{free_port()}"
    procs = [spawn(["tests/workers.py", "train_then_eval", "-", *common, port, f"--config.distributed.process_id={pid}",
                    "--", "--checkpoint=latest", "--split=validation"], devices=2) for pid in (0, 1)]
    logs = [finish(p)[1] for p in procs]
    assert all("2 local and 4 global devices" in log for log in logs), logs[0][-3000:]
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    val = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in val] == [4, 8]  # one line per evaluation: process 0 only
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["4", "8"]

    results = json.load(open(tmp_path / "run" / "eval_latest" / "eval_results.json"))
    assert results["checkpoint_step"] == 8 and results["num_examples"] == 96
    assert results["accuracy"] == val[-1]["val_accuracy"]  # the same program on the same checkpoint
    # Process 0 draws the masks of the first 3 validation canvases: 1 + 2 heads columns.
    read_png(tmp_path / "run" / "eval_latest" / "attention_masks.png", size=(480, 510))
