"""The run directory: checks that it can be written, and a lock so one run trains in it.

`check_writable` runs before any data or model work, so a read-only or misplaced workdir fails
in a second, not after data preparation. `TrainLock` is an exclusive `flock` on
`workdir/train.lock`, which records the holder (host, pid, start time, command). The kernel
releases a flock when its process dies, however it dies, so a lock left by a killed run is
free: the next run takes it over and says so. Several processes of one run: process 0 holds
the lock and tells the others whether it got it. eval.py takes no lock (it may read a workdir
while training runs).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from wrna_jax.errors import MissingFileError, WorkdirError

LOCK_FILE = "train.lock"
_MESSAGE_BYTES = 4096  # room for process 0's lock error, broadcast to the other processes


def check_writable(path: str, flag: str) -> None:
    """Creates directory `path` if needed and proves it writable with a probe file; raises a
    WorkdirError naming the problem (a file in the way, a read-only file system, no permission)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"{flag}={path} is a file, not a directory: choose another {flag}.")
    try:
        os.makedirs(path, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_test_", dir=path)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise WorkdirError(f"{flag}={path} cannot be written ({error.strerror or error}): choose a "
                           f"writable {flag}.") from None


def check_run_exists(workdir: str) -> None:
    """Raises MissingFileError when `workdir` is not a directory (nothing was trained there)."""
    if not os.path.isdir(workdir):
        what = "is a file, not a run directory" if os.path.exists(workdir) else "does not exist"
        raise MissingFileError(f"--workdir={workdir} {what}: point it at a directory train.py wrote.")


def _holder(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            text = f.read()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a run that did not record itself"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')} "
            f"({holder.get('command')})")


class TrainLock:
    """`with TrainLock(workdir):` holds the workdir for one training run; a second run fails at
    once with a WorkdirError naming the holder."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._file: Any = None

    def _acquire_here(self) -> None:
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise WorkdirError(
                f"{os.path.dirname(self.path)} is in use by another training run: "
                f"{_describe(_holder(self.path))}. Wait for it to finish or stop it, or train in "
                "another --workdir (eval.py can read this one meanwhile).") from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                file.close()
                raise
            logging.warning("The file system of %s does not support locks (%s): nothing stops a "
                            "second run from training in it at the same time.", self.path, error)
        previous = _holder(self.path)
        if previous:
            logging.warning("Taking over %s from %s, which ended without releasing it (killed or "
                            "crashed).", self.path, _describe(previous))
        file.seek(0)
        file.truncate()
        file.write(json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), "processes": jax.process_count()}))
        file.flush()
        os.fsync(file.fileno())
        self._file = file

    def __enter__(self) -> TrainLock:
        error = None
        if jax.process_index() == 0:
            try:
                self._acquire_here()
            except WorkdirError as held:
                error = held
        if jax.process_count() > 1:
            # Process 0's message itself, not the lock file: its holder may be gone by the time
            # another process would read it.
            text = str(error).encode()[:_MESSAGE_BYTES] if error is not None else b""
            buffer = np.zeros(_MESSAGE_BYTES, np.uint8)
            buffer[:len(text)] = np.frombuffer(text, np.uint8)
            shared = bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).rstrip(b"\0")
            if shared and error is None:
                error = WorkdirError(f"Process 0: {shared.decode(errors='replace')}")
        if error is not None:
            raise error
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()  # an empty lock file: released cleanly
            self._file.flush()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
