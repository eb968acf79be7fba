"""The training example order of both feeds: which examples each training step reads. Imports
no TensorFlow.

The split's example list is the training split in file order, or under the 'holdout' protocol
its kept examples (`data/holdout.py`) in file order; call its length N. Process p of P trains on
its share: positions p, p + P, p + 2P, ... of that list. Its stream is the concatenation of
epochs, epoch e being a permutation of the share drawn with `jax.random` from (seed, e, p), and
its step k reads positions k*b .. (k+1)*b - 1 of the stream (b = the per-process batch). So
batches straddle epochs and step k's examples depend only on (seed, k, b, N, p, P): a resumed run
(start at step k) reads exactly what an uninterrupted one reads. The global batch of step k is
the processes' step-k rows, process by process; with one process it is the stream itself.

The host feed (`data/pipeline.py`) reads its share in this order from host memory; the device
feed (`feeds.DeviceFeed`) gathers its rows of the global batch from the share each process holds
on its devices. Both therefore read the same examples in the same order for the same seed; their
augmentation draws differ (TensorFlow's stateless ops there, `jax.random` here), so a run is
still resumed with the feed it started with.

The permutations are computed on the CPU backend (`jax.default_device`), so a GPU host launches
no kernels for them and gets the same numbers as a CPU host.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

# Folded into the seed's key for the epoch permutations, apart from the initialisation's keys.
ORDER_STREAM = 0x6F726472  # "ordr"
# ... and for the per-example augmentation keys of the device feed.
AUGMENTATION_STREAM = 0x61756720  # "aug "


def check_process(process_index: int, process_count: int) -> None:
    """A ValueError unless 0 <= process_index < process_count."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index}: must be in [0, {process_count}).")


def share(num_examples: int, process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """int64: the positions in the example list of process `process_index`'s share (p, p + P,
    ...); the shares are disjoint, cover the list and differ in size by at most one."""
    check_process(process_index, process_count)
    return np.arange(process_index, num_examples, process_count, dtype=np.int64)


@functools.cache
def _cpu() -> jax.Device:
    return jax.local_devices(backend="cpu")[0]


def epoch_permutation(seed: int, epoch: int, share_size: int, process_index: int = 0) -> np.ndarray:
    """Epoch `epoch`'s order of a share of `share_size` examples: a permutation of 0 .. n - 1
    (positions in the share) drawn from (seed, epoch, process_index). Process 0's key is the
    seed's order key folded with the epoch (the device feed's order before processes had
    shares, so single-process device-feed runs resume unchanged); other processes fold in their
    index too."""
    with jax.default_device(_cpu()):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), ORDER_STREAM), epoch)
        if process_index:
            key = jax.random.fold_in(key, process_index)
        return np.asarray(jax.random.permutation(key, share_size)).astype(np.int64)


class Stream:
    """Process `process_index`'s training stream over an example list of `num_examples`
    (module docstring), keeping the permutations of the epochs in use.

    `positions(step)` are positions in the process's share (what the host feed's store holds);
    `indices(step)` the same examples as positions in the example list (what the device feed
    gathers from the split on the devices): index = process_index + process_count * position.
    """

    def __init__(self, seed: int, batch_size: int, num_examples: int, process_index: int = 0,
                 process_count: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1.")
        self.seed, self.batch_size, self.num_examples = seed, batch_size, num_examples
        self.process_index, self.process_count = process_index, process_count
        self.share_size = len(share(num_examples, process_index, process_count))
        if self.share_size == 0:
            raise ValueError(f"process {process_index} of {process_count} has no examples to train on "
                             f"({num_examples} in the split).")
        self._epochs: dict[int, np.ndarray] = {}

    def positions(self, step: int) -> np.ndarray:
        """int64 (b,): positions in this process's share of step `step`'s examples (0-based)."""
        n = self.share_size
        stream = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epochs = stream // n
        out = np.empty(self.batch_size, np.int64)
        for epoch in np.unique(epochs).tolist():
            if epoch not in self._epochs:
                self._epochs = {e: p for e, p in self._epochs.items() if e >= epoch - 1}
                self._epochs[epoch] = epoch_permutation(self.seed, epoch, n, self.process_index)
            chosen = epochs == epoch
            out[chosen] = self._epochs[epoch][stream[chosen] % n]
        return out

    def indices(self, step: int) -> np.ndarray:
        """int32 (b,): step `step`'s examples as positions in the split's example list."""
        return (self.process_index + self.process_count * self.positions(step)).astype(np.int32)


class GlobalStream:
    """The global batches of the processes' streams: row r of step k's batch belongs to process
    `row_processes[r]` (e.g. the process of the mesh device that holds it) and each process's
    rows, in order, are its `Stream`'s step-k batch. With one process: `Stream(seed, B, N)`."""

    def __init__(self, seed: int, num_examples: int, row_processes: np.ndarray):
        row_processes = np.asarray(row_processes)
        process_count = int(row_processes.max()) + 1
        self.rows = [np.flatnonzero(row_processes == p) for p in range(process_count)]
        self.streams = [Stream(seed, len(rows), num_examples, p, process_count) for p, rows in enumerate(self.rows)]
        self.batch_size = len(row_processes)

    def indices(self, step: int) -> np.ndarray:
        """int32 (B,): the example-list indices of the global batch of step `step`."""
        out = np.empty(self.batch_size, np.int32)
        for rows, stream in zip(self.rows, self.streams):
            out[rows] = stream.indices(step)
        return out
