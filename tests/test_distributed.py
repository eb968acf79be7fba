"""Multi-process data parallelism on JAX's distributed runtime (localhost, gloo): two processes
with 2 simulated CPU devices each against one process with 4, plus start-up settings and the
error of a process whose peer never arrives. Every subprocess is bounded by a timeout."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from wrna_jax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240

# argv: num_processes process_id port outdir. Trains 2 steps (2 accumulated micro-batches each)
# of the cluttered-MNIST CNN on fixed global batches, each process feeding its half; then
# checkpoints, the metrics log, process-0-first ordering and the preemption service.
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    num_processes, process_id, port, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    from wrna_jax import distributed
    assert distributed.initialize({"coordinator_address": f"localhost:{port}", "num_processes": num_processes,
                                   "process_id": process_id, "initialization_timeout": 120}) == (num_processes > 1)
    import flax, jax
    from configs import cluttered_mnist
    from wrna_jax import checkpoint, parallel, steps
    from wrna_jax.models import create_model
    from wrna_jax.state import create_train_state
    from wrna_jax.train import MetricsLog

    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (num_processes, 4, 4 // num_processes)
    config = cluttered_mnist.get_config()
    config.update_from_flattened_dict({"attention.depth": 0, "batch_size": 16, "optimizer.learning_rate": 0.01,
                                       "grad_accum_steps": 2})  # micro-batches sharded over all devices
    model = create_model(config)
    mesh = parallel.create_mesh()
    state = create_train_state(config, model, (40, 40, 1), mesh, steps_per_epoch=10)
    step = steps.make_train_step(config, model, mesh, steps_per_epoch=10)
    flat = flax.traverse_util.flatten_dict(jax.device_get({"params": state.params, "batch_stats": state.batch_stats}), sep="/")
    np.savez(os.path.join(outdir, f"initial_{num_processes}_{process_id}.npz"), **flat)
    rng = np.random.default_rng(0)
    share = slice(process_id * 16 // num_processes, (process_id + 1) * 16 // num_processes)
    for _ in range(2):
        batch = {"image": rng.random((16, 40, 40, 1), np.float32),
                 "label": rng.integers(0, 10, 16).astype(np.int32), "mask": np.ones(16, bool)}
        state, metrics = step(state, parallel.shard_batch({k: v[share] for k, v in batch.items()},
                                                          parallel.batch_sharding(mesh)))
    trained = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    flat = flax.traverse_util.flatten_dict(trained, sep="/")
    np.savez(os.path.join(outdir, f"params_{num_processes}_{process_id}.npz"), **flat)

    workdir = os.path.join(outdir, f"run{num_processes}")
    ckpts = checkpoint.Checkpoints(workdir)
    ckpts.save(2, state, {"accuracy": 0.5})
    ckpts.wait()
    restored = jax.device_get(ckpts.restore(2, state))  # `state` gives structure and shardings
    ckpts.close()
    assert int(restored.step) == 2
    for a, b in zip(jax.tree.leaves({"params": restored.params, "batch_stats": restored.batch_stats}),
                    jax.tree.leaves(trained)):
        np.testing.assert_array_equal(a, b)
    log = MetricsLog(workdir)
    log.write(2, {"train_loss": float(metrics["loss"])})
    log.close()

    marker = os.path.join(workdir, "first")
    with distributed.process_0_first("writing the marker"):
        if process_id == 0:
            time.sleep(1)
            open(marker, "w").write("0")
        else:
            assert open(marker).read() == "0", "process 1 ran before process 0 finished"

    preemption = distributed.Preemption()
    for i in range(400):
        if process_id == num_processes - 1 and i == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # one process notified, as a scheduler would
        if preemption.reached(i):
            break
        time.sleep(0.02)
    preemption.close()
    print(f"process {process_id} stopped at {i}", flush=True)
    print("OK", flush=True)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(args: list[str], devices: int, cwd: str) -> subprocess.Popen:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(["timeout", str(TIMEOUT_S), sys.executable, *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_with_two_devices_each_match_one_process_with_four(tmp_path):
    port = str(free_port())
    procs = [launch(["-c", WORKER, "2", str(pid), port, str(tmp_path)], 2, ROOT) for pid in (0, 1)]
    procs.append(launch(["-c", WORKER, "1", "0", "0", str(tmp_path)], 4, ROOT))
    outputs = [p.communicate(timeout=TIMEOUT_S + 10) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0 and "OK" in out, (out + err)[-4000:]

    # Same initialisation; after training, per tensor, the difference is below 1% of what the
    # tensor moved (measured <0.1%): cross-process reductions round differently, and max pooling
    # and BatchNorm amplify rounding a little.
    reference, initial = np.load(tmp_path / "params_1_0.npz"), np.load(tmp_path / "initial_1_0.npz")
    for pid in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"initial_2_{pid}.npz")["params/backbone/fc2/kernel"],
                                      initial["params/backbone/fc2/kernel"])
        got = np.load(tmp_path / f"params_2_{pid}.npz")
        assert sorted(got.files) == sorted(reference.files)
        for name in reference.files:
            moved = np.linalg.norm(reference[name] - initial[name])
            assert moved > 0, name
            difference = np.linalg.norm(got[name] - reference[name])
            assert difference <= 1e-2 * moved + 1e-6 * np.linalg.norm(reference[name]) + 1e-6, name

    stops = {line for out, _ in outputs[:2] for line in out.splitlines() if "stopped at" in line}
    assert len(stops) == 2 and len({line.split()[-1] for line in stops}) == 1, stops
    assert int(next(iter(stops)).split()[-1]) > 5
    assert len(open(tmp_path / "run2" / "metrics.jsonl").readlines()) == 1  # process 0 only
    assert sorted(os.listdir(tmp_path / "run2" / "checkpoints")) == ["2"]


def test_a_process_whose_peer_never_arrives_fails_clearly_within_the_timeout(tmp_path):
    started = time.monotonic()
    proc = launch(["train.py", "--config=configs/cluttered_mnist.py", f"--workdir={tmp_path / 'run'}",
                   f"--config.distributed.coordinator_address=localhost:{free_port()}",
                   "--config.distributed.num_processes=2", "--config.distributed.process_id=0",
                   "--config.distributed.initialization_timeout=3"], 1, ROOT)
    out, err = proc.communicate(timeout=TIMEOUT_S + 10)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, (out + err)[-3000:]
    assert "process 0 of 2: not all processes joined the coordinator at localhost:" in err
    assert "initialization_timeout=3 s" in err and "Check failure" not in err
    assert elapsed < 60 and not (tmp_path / "run").exists()


def test_settings_from_config_environment_and_schedulers():
    assert distributed.settings_for({}, {}) is None
    assert distributed.settings_for({"num_processes": 1, "process_id": 0}, {}) is None
    explicit = distributed.settings_for({"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                         "process_id": 3, "local_device_ids": "0,1",
                                         "initialization_timeout": 60}, {})
    assert explicit == dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3,
                            local_device_ids=[0, 1], initialization_timeout=60)
    from_env = distributed.settings_for({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                                             "JAX_PROCESS_ID": "1"})
    assert (from_env["coordinator_address"], from_env["num_processes"], from_env["process_id"]) == ("h:1", 2, 1)
    slurm = {"SLURM_JOB_ID": "77", "SLURM_PROCID": "2", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8"}
    detected = distributed.settings_for({}, slurm)
    assert detected["num_processes"] is None and detected["coordinator_address"] is None  # JAX's plugin
    assert distributed.settings_for({}, {**slurm, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert distributed.settings_for({}, {"OMPI_COMM_WORLD_SIZE": "2"}) is not None
    with pytest.raises(ValueError, match=r"needs all of config.distributed.coordinator_address .* got "
                                         r"coordinator_address=None, num_processes=2, process_id=0"):
        distributed.settings_for({"num_processes": 2, "process_id": 0}, {})
    with pytest.raises(ValueError, match=r"process_id=2: must be in 0..1 for num_processes=2"):
        distributed.settings_for({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, {})
    with pytest.raises(ValueError, match=r"local_device_ids='a,b': use comma-separated device numbers"):
        distributed.settings_for({"coordinator_address": "h:1", "num_processes": 2, "process_id": 0,
                                  "local_device_ids": "a,b"}, {})


def test_train_py_and_eval_py_across_two_processes(tmp_path):
    """The user's commands on two processes x 2 devices: each process reads half of every split,
    process 0 alone writes the logs and figures, the checkpoints written together restore for
    evaluation, and eval.py counts every example of the split exactly once."""
    common = ["--config=configs/cluttered_mnist.py", f"--workdir={tmp_path / 'run'}",
              f"--config.dataset.data_dir={tmp_path / 'data'}", "--config.dataset.num_train=256",
              "--config.dataset.num_validation=96", "--config.dataset.num_test=80",
              "--config.batch_size=64", "--config.eval_batch_size=32", "--config.num_epochs=2",
              "--config.attention.depth=1", "--config.log_every_steps=2",
              "--config.dataset.sweep_distractors=()", "--config.num_mask_examples=3",
              "--config.distributed.num_processes=2", "--config.distributed.initialization_timeout=120"]

    def run_both(script: str, *extra: str) -> list[str]:
        port = f"--config.distributed.coordinator_address=localhost:{free_port()}"
        procs = [launch([script, *common, *extra, port, f"--config.distributed.process_id={pid}"], 2, ROOT)
                 for pid in (0, 1)]
        outputs = [p.communicate(timeout=TIMEOUT_S + 10) for p in procs]
        for p, (out, err) in zip(procs, outputs):
            assert p.returncode == 0, (out + err)[-4000:]
        return [err for _, err in outputs]

    logs = run_both("train.py")
    assert all("2 local and 4 global devices" in log for log in logs)
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    val = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in val] == [4, 8]  # one line per evaluation: process 0 only
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["4", "8"]

    run_both("eval.py", "--checkpoint=latest", "--split=validation")
    results = json.load(open(tmp_path / "run" / "eval_latest" / "eval_results.json"))
    assert results["checkpoint_step"] == 8 and results["num_examples"] == 96
    assert results["accuracy"] == pytest.approx(val[-1]["val_accuracy"], abs=1e-9)
    assert os.path.isfile(tmp_path / "run" / "eval_latest" / "attention_masks.png")
