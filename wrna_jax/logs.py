"""The training logs in the workdir: `metrics.jsonl` (one JSON line per write) and TensorBoard
events, both through clu's metric writers, and their repair on resume.

A run killed after its last checkpoint has logged steps that the resumed run logs again.
`truncate_after(workdir, step)` drops everything logged after the step the run resumes from
(and a line or record cut short by the kill), so that the logs read as one uninterrupted run.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Any

import jax
from absl import logging
from clu import metric_writers

from wrna_jax import metrics_file

METRICS_FILE = metrics_file.METRICS_FILE


class JsonlWriter(metric_writers.MetricWriter):
    """A clu metric writer appending every scalar write to `metrics.jsonl` as one JSON line
    {"step": ..., name: value, ...}; everything but scalars is TensorBoard's alone."""

    def __init__(self, path: str):
        self.path = path

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        metrics_file.append(self.path, step, scalars)

    def write_summaries(self, step, values, metadata=None): pass  # noqa: E704
    def write_images(self, step, images): pass  # noqa: E704
    def write_videos(self, step, videos): pass  # noqa: E704
    def write_audios(self, step, audios, *, sample_rate): pass  # noqa: E704
    def write_texts(self, step, texts): pass  # noqa: E704
    def write_histograms(self, step, arrays, num_buckets=None): pass  # noqa: E704
    def write_hparams(self, hparams): pass  # noqa: E704
    def flush(self): pass  # noqa: E704
    def close(self): pass  # noqa: E704


def metric_writer(workdir: str) -> metric_writers.MetricWriter:
    """Process 0: TensorBoard events (clu's default writer) and metrics.jsonl; the other
    processes log only."""
    if jax.process_index() != 0:
        return metric_writers.create_default_writer(workdir, just_logging=True)
    return metric_writers.MultiWriter([metric_writers.create_default_writer(workdir),
                                       JsonlWriter(os.path.join(workdir, METRICS_FILE))])


def _truncate_events(path: str, step: int) -> int:
    """Rewrites a TensorBoard event file without the events after `step` (TensorBoard itself
    would show both attempts' values for those steps)."""
    from tensorflow.core.util import event_pb2

    from wrna_jax.data.tensorflow_cpu import tf

    records, dropped = [], 0
    try:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = event_pb2.Event.FromString(record)
            if event.HasField("summary") and event.step > step:
                dropped += 1
            else:
                records.append(record)
    except tf.errors.DataLossError:
        dropped += 1  # the last record, cut short by a kill
    if dropped:
        with tf.io.TFRecordWriter(path + ".tmp") as writer:
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
