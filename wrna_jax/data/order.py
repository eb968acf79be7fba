"""The device feed's example order: which examples each training step reads. Imports no
TensorFlow.

The training stream is the concatenation of epochs; epoch e is a permutation of the split's
N examples drawn from (seed, e), and step k reads positions k*B .. (k+1)*B - 1 of the stream,
so batches straddle epochs and step k's examples depend only on (seed, k, B, N): a resumed run
reads what an uninterrupted one reads. (The host feed's tf.data pipeline shuffles each process's
share with TensorFlow's stateless shuffle instead: `data/pipeline.py`.)
"""

from __future__ import annotations

import jax
import numpy as np

# Folded into the seed's key for the epoch permutations, apart from the initialisation's keys.
ORDER_STREAM = 0x6F726472  # "ordr"
# ... and for the per-example augmentation keys.
AUGMENTATION_STREAM = 0x61756720  # "aug "


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """Epoch `epoch`'s order of 0 .. N - 1."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), ORDER_STREAM), epoch)
    return np.asarray(jax.random.permutation(key, num_examples))


class Stream:
    """Step k's example indices, keeping the permutations of the epochs in use."""

    def __init__(self, seed: int, batch_size: int, num_examples: int):
        self.seed, self.batch_size, self.num_examples = seed, batch_size, num_examples
        self._epochs: dict[int, np.ndarray] = {}

    def indices(self, step: int) -> np.ndarray:
        """int32 (B,): the examples of step `step` (0-based)."""
        positions = step * self.batch_size + np.arange(self.batch_size)
        epochs = positions // self.num_examples
        for epoch in np.unique(epochs):
            if int(epoch) not in self._epochs:
                self._epochs = {e: p for e, p in self._epochs.items() if e >= epoch - 1}
                self._epochs[int(epoch)] = epoch_permutation(self.seed, int(epoch), self.num_examples)
        out = np.empty(self.batch_size, np.int32)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            out[chosen] = self._epochs[int(epoch)][positions[chosen] % self.num_examples]
        return out
