"""tf.data input pipelines over prepared TFDS builders: sharded, deterministic, resumable.

Every batch is a dict of tensors with a leading `batch_size` axis and a boolean `mask` (False
only on eval padding), so training and evaluation code can treat batches alike. Training
streams are infinite and depend only on (seed, process_index, position in the stream): the
epoch order and, through the per-example seed `rng` handed to the preprocessing, the random
augmentation. A run restarted with `start_step=k` sees exactly the batches, augmentation
included, that an uninterrupted run sees from step k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from wrna_jax.data.tensorflow_cpu import tf

Example = dict[str, tf.Tensor]
PreprocessFn = Callable[[Example], Example]

# Folded into the (seed, process_index) key to derive augmentation seeds, so that they are
# independent of the epoch-shuffle seeds derived from the same key.
_AUGMENTATION_STREAM = 0x6175676D656E74  # "augment"


def process_split(split: str, process_index: int = 0, process_count: int = 1
                  ) -> tfds.typing.SplitArg:
    """This process's disjoint share of `split` (shares differ in size by at most one)."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index}: must be in [0, {process_count}).")
    return tfds.even_splits(split, n=process_count)[process_index]


def num_eval_batches(num_examples: int, batch_size: int, process_count: int = 1) -> int:
    """Batches each process yields for a padded eval split of `num_examples`.

    The same on every process (sized for the largest share), so multi-process evaluation runs
    the same number of steps everywhere.
    """
    return math.ceil(math.ceil(num_examples / process_count) / batch_size)


def create_split(builder: tfds.core.DatasetBuilder, split: str, batch_size: int, *,
                 train: bool, seed: int, preprocess_fn: PreprocessFn, process_index: int = 0,
                 process_count: int = 1, pad_last_batch: bool = False, cache: bool = True,
                 shuffle_buffer: int = 16_384, prefetch: int = tf.data.AUTOTUNE,
                 start_step: int = 0, decoders: Any = None, keep: np.ndarray | None = None,
                 cache_file: str | None = None) -> tf.data.Dataset:
    """Batches of this process's share of `split`; `batch_size` is per process.

    Training (`train=True`): an infinite stream; epoch `e` is this share shuffled with a seed
    derived from (seed, process_index, e), batches of exactly `batch_size` may straddle epochs.
    `start_step=k` starts at batch k of that stream by skipping only inside the epoch where
    batch k starts, so resuming costs at most one epoch of reading however large k is.

    Evaluation (`train=False`): one pass in file order. With `pad_last_batch`, the share is
    padded with `mask=False` examples to `num_eval_batches(...)` full batches (identical on
    every process) so no example is dropped and shapes stay static; otherwise the last batch
    may be smaller.

    `preprocess_fn` maps one TFDS example to a dict of fixed-shape tensors; `mask` is added by
    the pipeline. Training examples also carry `rng`, a shape-[2] int64 stateless seed that is
    a pure function of (seed, process_index, position of the example in the stream), for the
    augmentation to draw from. `decoders` (e.g. `tfds.decode.PartialDecoding`) says how the
    builder's features are decoded; by default the `decoders` attribute of `preprocess_fn`
    when it has one (see `preprocessing.FineGrainedPreprocess`), else full decoding. Data are
    cached in memory after reading and before preprocessing when `cache`: with undecoded
    images that caches the encoded bytes; when `preprocess_fn` has a `before_cache` stage
    (decoded images), it runs before the cache and `preprocess_fn` after it. `cache_file` puts
    the cache in files with that prefix instead of memory (written in the first epoch, read
    afterwards and by later runs).

    `keep` (indices into `split`, e.g. a training split without its held-out validation
    examples, `data/holdout.py`) reads only those examples: every process reads the split, keeps
    them and takes every process_count-th of them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1.")
    if start_step < 0:
        raise ValueError(f"start_step={start_step}: must be >= 0.")
    if start_step and not train:
        raise ValueError(f"start_step={start_step}: only training streams can be resumed.")
    if train and shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer={shuffle_buffer}: must be >= 1.")
    if keep is None:
        subsplit = process_split(split, process_index, process_count)
        num_examples = builder.info.splits[subsplit].num_examples
        total = builder.info.splits[split].num_examples
    else:
        subsplit, total = split, len(keep)
        num_examples = len(range(process_index, total, process_count))

    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(options=options, try_autocache=False)
    if decoders is None:
        decoders = getattr(preprocess_fn, "decoders", None)
    ds = builder.as_dataset(split=subsplit, shuffle_files=False, read_config=read_config,
                            decoders=decoders)
    if keep is not None:
        kept = np.zeros(builder.info.splits[split].num_examples, bool)
        kept[np.asarray(keep)] = True
        kept = tf.constant(kept)
        ds = (ds.enumerate().filter(lambda index, example: tf.gather(kept, index))
              .map(lambda index, example: example).shard(process_count, process_index))
    before_cache = getattr(preprocess_fn, "before_cache", None)
    if before_cache is not None:
        ds = ds.map(before_cache, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache(cache_file or "")

    if train:
        if num_examples == 0:
            raise ValueError(f"process {process_index} of {process_count} has no examples of "
                             f"split {split!r} to train on.")
        start_example = start_step * batch_size
        ds = _epoch_stream(ds, num_examples, start_example, shuffle_buffer, seed, process_index)
        positions = tf.data.Dataset.counter(start_example)
        key = _augmentation_key(seed, process_index)
        ds = tf.data.Dataset.zip(ds, positions).map(
            lambda example, position: preprocess_fn(
                {**example, "rng": tf.random.experimental.stateless_fold_in(key, position)}),
            num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.map(lambda batch: {**batch, "mask": tf.ones([batch_size], tf.bool)})
    else:
        ds = ds.map(lambda example: {**preprocess_fn(example), "mask": tf.constant(True)},
                    num_parallel_calls=tf.data.AUTOTUNE)
        if pad_last_batch:
            padded = num_eval_batches(total, batch_size, process_count) * batch_size
            ds = ds.concatenate(_padding(ds.element_spec, padded - num_examples))
        ds = ds.batch(batch_size, drop_remainder=pad_last_batch)
    return ds.prefetch(prefetch).with_options(options)


def read_labels(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
    """The labels of `split` in file order (the order `create_split` reads), images not decoded."""
    ds = builder.as_dataset(split=split, shuffle_files=False, batch_size=4096,
                            decoders=tfds.decode.PartialDecoding({"label": True}),
                            read_config=tfds.ReadConfig(try_autocache=False))
    parts = [np.asarray(batch["label"]) for batch in tfds.as_numpy(ds)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def as_numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Iterates `ds` as dicts of numpy arrays (no device placement: the trainer does that)."""
    return iter(tfds.as_numpy(ds))


def _augmentation_key(seed: int, process_index: int) -> tf.Tensor:
    """The key that example seeds are folded from: distinct per (seed, process_index) and
    independent of the epoch-shuffle keys."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed, process_index], tf.int64), _AUGMENTATION_STREAM)


def _epoch_stream(ds: tf.data.Dataset, num_examples: int, start_example: int,
                  shuffle_buffer: int, seed: int, process_index: int) -> tf.data.Dataset:
    """Infinite concatenation of per-epoch shuffles of `ds`, from example `start_example` on.

    Each epoch's shuffle seed is a pure function of (seed, process_index, epoch) rather than
    the state of a `reshuffle_each_iteration` shuffle, which is what lets a resumed stream
    start directly at the right epoch.
    """
    key = tf.constant([seed, process_index], tf.int64)

    def shuffled_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        epoch_key = tf.random.experimental.stateless_fold_in(key, epoch)
        epoch_seed = tf.random.stateless_uniform([], seed=epoch_key, minval=None, maxval=None,
                                                 dtype=tf.int64)
        return ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)

    first_epoch, skip = divmod(start_example, num_examples)
    stream = tf.data.Dataset.counter(first_epoch).flat_map(shuffled_epoch).skip(skip)
    return stream.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def _padding(element_spec: Mapping[str, tf.TensorSpec], count: int) -> tf.data.Dataset:
    """`count` all-zero examples with `mask=False`, matching `element_spec`."""
    for key, spec in element_spec.items():
        if not spec.shape.is_fully_defined():
            raise ValueError(f"pad_last_batch needs fixed shapes; {key!r} has {spec.shape}.")
    zeros = {key: tf.zeros(spec.shape, spec.dtype) for key, spec in element_spec.items()}
    zeros["mask"] = tf.constant(False)
    return tf.data.Dataset.from_tensors(zeros).repeat(count)
