"""The training logs in the workdir: `metrics.jsonl` (one JSON line per write) and TensorBoard
events, and their repair on resume. Imports no TensorFlow: the events are written and read with
the `tensorboard` package's own record writer and protocol buffers on plain Python files (clu's
writers need TensorFlow, which the device feed does without, and tensorboard's EventFileWriter
opens its file through `tensorboard.compat.tf`, which loads TensorFlow, seconds of start-up,
whenever it is installed). The workdir is therefore a local or mounted directory.

A run killed after its last checkpoint has logged steps that the resumed run logs again.
`truncate_after(workdir, step)` drops everything logged after the step the run resumes from
(and a line or record cut short by the kill), so that the logs read as one uninterrupted run.
"""

from __future__ import annotations

import glob
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
from absl import logging
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from wrna_jax import metrics_file

METRICS_FILE = metrics_file.METRICS_FILE


class MetricWriter:
    """Scalars to metrics.jsonl and TensorBoard events (process 0; other processes write nothing)."""

    def __init__(self, workdir: str):
        self.writes = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self.events = EventFile(workdir) if self.writes else None

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.writes:
            return
        metrics_file.append(self.path, step, scalars)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, simple_value=float(value))
                                             for name, value in scalars.items()])
        self.events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self) -> None:
        if self.events is not None:
            self.events.flush()

    def close(self) -> None:
        if self.events is not None:
            self.events.close()


class EventFile:
    """A new TensorBoard event file in `directory`, named and begun as tensorboard's
    EventFileWriter does (`events.out.tfevents.<time>.<host>.<pid>.<n>`, a file_version event
    first); events are written as they come and reach the disk at `flush`."""

    _count = itertools.count()

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(self._count)}"
        self._file = open(os.path.join(directory, name), "wb")
        self._records = RecordWriter(self._file)
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def add_event(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def metric_writer(workdir: str) -> MetricWriter:
    return MetricWriter(workdir)


def read_records(path: str) -> Iterator[bytes]:
    """The records of a TFRecord file (TensorBoard's event format); stops at a record cut short."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                return
            yield data


def _truncate_events(path: str, step: int) -> int:
    """Rewrites a TensorBoard event file without the events after `step` (TensorBoard itself
    would show both attempts' values for those steps) and a record cut short by a kill."""
    with open(path, "rb") as f:
        size = len(f.read())
    records, dropped, kept_bytes = [], 0, 0
    for record in read_records(path):
        kept_bytes += 16 + len(record)
        event = event_pb2.Event.FromString(record)
        if event.HasField("summary") and event.step > step:
            dropped += 1
        else:
            records.append(record)
    dropped += kept_bytes < size  # a record cut short
    if dropped:
        with open(path + ".tmp", "wb") as f:
            writer = RecordWriter(f)
            for record in records:
                writer.write(record)
        os.replace(path + ".tmp", path)
    return dropped


def truncate_after(workdir: str, step: int) -> None:
    """Drops what was logged after `step` (0: a run starting afresh) from metrics.jsonl and the
    TensorBoard event files of `workdir` (process 0 only)."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, METRICS_FILE)
    dropped = metrics_file.truncate_after(path, step) if os.path.exists(path) else 0
    for events in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
        dropped += _truncate_events(events, step)
    if dropped:
        logging.info("Dropped %d log entries written after step %d by an earlier attempt.", dropped, step)
