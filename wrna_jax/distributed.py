"""Multi-process runs on JAX's own distributed runtime, and stopping cleanly on preemption.

`initialize(config.distributed)` calls `jax.distributed.initialize()` when the run spans
several processes: explicit settings (`coordinator_address`, `num_processes`, `process_id`,
from the config or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) win;
otherwise SLURM (`srun`) and Open MPI (`mpirun`) launches are detected from their environment
and JAX's cluster plugins fill in the rest. A single process needs nothing.

A process whose peers never arrive stops with an error naming the missing processes and the
coordinator after `initialization_timeout` seconds (JAX's own client would abort the process
with a C++ stack trace, or only later).

`Preemption` turns SIGTERM (what SLURM and cloud schedulers send before killing a job) into a
step at which every process stops: several processes use orbax's `reached_preemption` (JAX's
preemption service, which spreads the notice through the coordination service and picks the
same step on every process without blocking the training loop); one process uses a Python
signal handler, because that service exists only when `jax.distributed` runs.
"""

import os
import signal
import sys
import threading
import types
from typing import Any, Mapping

import jax
from absl import logging
from jax.experimental import multihost_utils

from wrna_jax.errors import ConfigError

# JAX's own deadline is set this much later than ours, so that ours reports first.
_JAX_TIMEOUT_MARGIN_S = 30


def cluster_process_count(environ: Mapping[str, str] = os.environ) -> int | None:
    """Processes of a SLURM (`srun`) or Open MPI (`mpirun`) launch; None outside one."""
    if "SLURM_JOB_ID" in environ and "SLURM_PROCID" in environ:
        return int(environ.get("SLURM_STEP_NUM_TASKS", environ.get("SLURM_NTASKS", "1")))
    if "OMPI_COMM_WORLD_SIZE" in environ:
        return int(environ["OMPI_COMM_WORLD_SIZE"])
    return None


def _local_device_ids(value: Any) -> list[int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return [value]
    try:
        return [int(part) for part in str(value).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"config.distributed.local_device_ids={value!r}: use comma-separated "
                          "device numbers such as '0,1', or leave it unset for all.") from None


def _explicit(distributed: Mapping[str, Any], environ: Mapping[str, str], key: str, env: str,
              cast: Any) -> Any:
    value = distributed[key]
    if value is None and environ.get(env):
        try:
            value = cast(environ[env])
        except ValueError:
            raise ConfigError(f"{env}={environ[env]!r} is not valid for config.distributed.{key}.") from None
    return value


def settings_for(distributed: Mapping[str, Any],
                 environ: Mapping[str, str] = os.environ) -> dict[str, Any] | None:
    """The arguments for `jax.distributed.initialize`, or None for a single-process run.

    `config.distributed` fields win over JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, which win over a SLURM or Open MPI launch. Raises ValueError before any
    waiting when the settings are incomplete or inconsistent.
    """
    coordinator = _explicit(distributed, environ, "coordinator_address", "JAX_COORDINATOR_ADDRESS", str)
    num_processes = _explicit(distributed, environ, "num_processes", "JAX_NUM_PROCESSES", int)
    process_id = _explicit(distributed, environ, "process_id", "JAX_PROCESS_ID", int)
    timeout = distributed["initialization_timeout"]
    if not isinstance(timeout, int) or timeout < 1:
        raise ConfigError(f"config.distributed.initialization_timeout={timeout!r}: use a positive "
                          "whole number of seconds.")
    cluster = cluster_process_count(environ)
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"config.distributed.num_processes={num_processes}: use 1 or more.")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"config.distributed.process_id={process_id}: must be in "
                          f"0..{num_processes - 1} for num_processes={num_processes}.")
    if num_processes == 1 or (num_processes is None and (cluster or 1) == 1):
        return None
    if not cluster and (coordinator is None or num_processes is None or process_id is None):
        raise ConfigError(
            "A multi-process run outside SLURM or Open MPI needs all of "
            "config.distributed.coordinator_address ('host:port' of process 0), "
            "config.distributed.num_processes and config.distributed.process_id (or the "
            "environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); got "
            f"coordinator_address={coordinator!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}.")
    return dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                local_device_ids=_local_device_ids(distributed["local_device_ids"]),
                initialization_timeout=timeout)


def initialize(distributed: Mapping[str, Any]) -> bool:
    """Joins the multi-process run described by `config.distributed` and the environment;
    returns whether the run has several processes. Call it before any other JAX work."""
    settings = settings_for(distributed)
    if settings is None:
        return False
    if jax.distributed.is_initialized():
        return True
    timeout = settings.pop("initialization_timeout")
    described = (f"process {settings['process_id'] if settings['process_id'] is not None else '(from the cluster)'}"
                 f" of {settings['num_processes'] or cluster_process_count()}")
    coordinator = settings["coordinator_address"] or "the cluster's first node"

    def give_up() -> None:
        message = (f"{described}: not all processes joined the coordinator at {coordinator} within "
                   f"config.distributed.initialization_timeout={timeout} s. Start every process "
                   "with the same coordinator_address and num_processes and distinct process_id "
                   "(under SLURM, launch with srun), check that process 0's host and port are "
                   "reachable, or raise the timeout.")
        logging.error(message)
        sys.stderr.write(f"ERROR: {message}\n")
        sys.stderr.flush()
        os._exit(1)  # the main thread is blocked inside JAX's C++ client: nothing else can stop it

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    logging.info("Joining the distributed run as %s at %s (waiting up to %d s).", described,
                 coordinator, timeout)
    watchdog.start()
    try:
        jax.distributed.initialize(**settings, initialization_timeout=timeout + _JAX_TIMEOUT_MARGIN_S)
    finally:
        watchdog.cancel()
    logging.info("Process %d of %d: %d local and %d global devices.", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def process_0_first(what: str) -> "_Process0First":
    """`with process_0_first('...'):` runs the block on process 0, then on the others (for
    work such as preparing a dataset that must not run concurrently on a shared disk)."""
    return _Process0First(what)


class _Process0First:
    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        if jax.process_count() > 1 and jax.process_index() != 0:
            multihost_utils.sync_global_devices(f"process 0 finished: {self.what}")

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None and jax.process_count() > 1 and jax.process_index() == 0:
            multihost_utils.sync_global_devices(f"process 0 finished: {self.what}")


class Preemption:
    """SIGTERM or Ctrl-C (SIGINT) -> `reached(step)` is True at one step, the same on every
    process; `signal` names what was received.

    Create it just before the training loop, call `reached(step)` after every step and
    `close()` after the loop (the previous handlers come back). One process: Python handlers
    set a flag. Several processes: the checkpoint manager's `reached_preemption` (JAX's
    preemption service, which installs its own SIGTERM handler when `jax.distributed` starts and
    needs every process to call `reached` with the same steps); a Ctrl-C is handed to it as a
    SIGTERM to this process. A second Ctrl-C ends the process at once, without saving (orbax
    removes the unfinished checkpoint at the next start).
    """

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.multi_process = jax.process_count() > 1
        self.received: str | None = None  # the first signal this process received
        self._stop = False
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            caught = (signal.SIGINT,) if self.multi_process else (signal.SIGINT, signal.SIGTERM)
            for signum in caught:
                self._previous[signum] = signal.signal(signum, self._handle)

    @property
    def signal(self) -> str | None:
        """What stopped the run: 'SIGINT', 'SIGTERM', or None while it has not stopped."""
        return (self.received or "SIGTERM") if self._stop else None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if signum == signal.SIGINT and self.received == "SIGINT":
            sys.stderr.write("\nSecond Ctrl-C: stopping now without saving; the latest saved "
                             "checkpoint is kept.\n")
            sys.stderr.flush()
            os._exit(130)  # an orbax save may be in flight: nothing else ends the process at once
        self.received = signal.Signals(signum).name
        logging.warning("Received %s: saving a checkpoint after this step, then exiting%s.", self.received,
                        " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT else "")
        if self.multi_process:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption service picks the common step
        else:
            self._stop = True

    def reached(self, step: int) -> bool:
        """Whether to save and stop after `step`."""
        if self.multi_process and not self._stop:
            self._stop = bool(self.manager.reached_preemption(step))
        return self._stop

    def close(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
