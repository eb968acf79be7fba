"""Multi-process start-up on JAX's distributed runtime: the settings from the config, the
environment and schedulers, and the error of a process whose peer never arrives (bounded by a
timeout). Two processes training against one, and train.py and eval.py on two processes, are in
test_parallel.py (which runs them)."""

import time

import pytest

from conftest import free_port, spawn
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
