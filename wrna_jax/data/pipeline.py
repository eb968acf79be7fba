"""tf.data input pipelines over prepared TFDS builders: sharded, deterministic, resumable.

Every batch is a dict of tensors with a leading `batch_size` axis and a boolean `mask` (False
only on eval padding), so training and evaluation code can treat batches alike. Training
streams are infinite and depend only on (seed, process_index, position in the stream): the
example order, which is `data/order.py`'s (the device feed's too), and, through the
per-example seed `rng` handed to the preprocessing, the random augmentation. Each process's
training share is held in host memory (`ShareStore`) so it can be read in that order. A run
restarted with `start_step=k` sees exactly the batches, augmentation included, that an
uninterrupted run sees from step k.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from wrna_jax.data import order
from wrna_jax.data.tensorflow_cpu import tf

Example = dict[str, tf.Tensor]
PreprocessFn = Callable[[Example], Example]

# Folded into the (seed, process_index) key to derive the augmentation seeds.
_AUGMENTATION_STREAM = 0x6175676D656E74  # "augment"


def process_split(split: str, process_index: int = 0, process_count: int = 1
                  ) -> tfds.typing.SplitArg:
    """This process's disjoint share of `split` (shares differ in size by at most one)."""
    order.check_process(process_index, process_count)
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
                 prefetch: int = tf.data.AUTOTUNE, start_step: int = 0, decoders: Any = None,
                 keep: np.ndarray | None = None, cache_file: str | None = None) -> tf.data.Dataset:
    """Batches of this process's share of `split`; `batch_size` is per process.

    Training (`train=True`): an infinite stream in the order of `data/order.py`, the order the
    device feed reads too. This process's share is positions p, p + P, ... of the example list
    (`split` in file order, or its `keep` indices); epoch e is a permutation of the share drawn
    from (seed, e, p), and batch k is positions k*b .. (k+1)*b - 1 of the concatenated epochs,
    so batches straddle epochs and `start_step=k` starts directly at batch k. tf.data cannot
    read TFRecord files at random, so the share is read once into host memory, a `ShareStore`
    (Python-side, not captured in a tf.data graph): the examples as read (encoded image bytes
    for the fine-grained family, uint8 arrays otherwise), or with `cache` and a `before_cache`
    stage in `preprocess_fn` (`decoded_cache`: decoded, resized uint8 images) the examples after
    that stage. Without `cache`, `before_cache` runs again each time an example is read.
    `cache_file` keeps what the store is filled from in files with that prefix as well
    (tf.data's file cache: written by the first run, read by later runs instead of decoding
    again); the store is in memory either way.

    Evaluation (`train=False`): one pass in file order over this process's contiguous share
    (`process_split`), read from the files and not cached. With `pad_last_batch`, the share is
    padded with `mask=False` examples to `num_eval_batches(...)` full batches (identical on
    every process) so no example is dropped and shapes stay static; otherwise the last batch
    may be smaller.

    `preprocess_fn` maps one TFDS example to a dict of fixed-shape tensors; `mask` is added by
    the pipeline. Training examples also carry `rng`, a shape-[2] int64 stateless seed that is
    a pure function of (seed, process_index, position of the example in the stream), for the
    augmentation to draw from. `decoders` (e.g. `tfds.decode.PartialDecoding`) says how the
    builder's features are decoded; by default the `decoders` attribute of `preprocess_fn`
    when it has one (see `preprocessing.FineGrainedPreprocess`), else full decoding.

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
    order.check_process(process_index, process_count)
    if keep is None and not train:
        subsplit = process_split(split, process_index, process_count)
        num_examples = builder.info.splits[subsplit].num_examples
        total = builder.info.splits[split].num_examples
    else:  # training shares are strided: every process_count-th example of the list
        total = len(keep) if keep is not None else builder.info.splits[split].num_examples
        subsplit, num_examples = split, len(order.share(total, process_index, process_count))

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
        ds = ds.enumerate().filter(lambda index, example: tf.gather(kept, index)).map(
            lambda index, example: example)
    before_cache = getattr(preprocess_fn, "before_cache", None)

    if train:
        if num_examples == 0:
            raise ValueError(f"process {process_index} of {process_count} has no examples of "
                             f"split {split!r} to train on.")
        ds = ds.shard(process_count, process_index)
        if before_cache is not None and cache:
            ds = ds.map(before_cache, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            if cache_file:
                ds = ds.cache(cache_file)
        store = ShareStore.read(ds.with_options(options))
        stream = order.Stream(seed, batch_size, total, process_index, process_count)
        ds = store.stream(stream, start_step)
        if before_cache is not None and not cache:
            ds = ds.map(before_cache, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        positions = tf.data.Dataset.counter(start_step * batch_size)
        key = _augmentation_key(seed, process_index)
        ds = tf.data.Dataset.zip(ds, positions).map(
            lambda example, position: preprocess_fn(
                {**example, "rng": tf.random.experimental.stateless_fold_in(key, position)}),
            num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.map(lambda batch: {**batch, "mask": tf.ones([batch_size], tf.bool)})
    else:
        if keep is not None:
            ds = ds.shard(process_count, process_index)
        if before_cache is not None:
            ds = ds.map(before_cache, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.map(lambda example: {**preprocess_fn(example), "mask": tf.constant(True)},
                    num_parallel_calls=tf.data.AUTOTUNE)
        if pad_last_batch:
            padded = num_eval_batches(total, batch_size, process_count) * batch_size
            ds = ds.concatenate(_padding(ds.element_spec, padded - num_examples))
        ds = ds.batch(batch_size, drop_remainder=pad_last_batch)
    return ds.prefetch(prefetch).with_options(options)


class ShareStore:
    """A process's training share in host memory, for the stream to read at random.

    Each feature of the examples is a list of numpy values, one per example (bytes objects for
    encoded images, arrays otherwise), so it takes about the examples' own size: this process's
    share of the encoded files, or of the decoded images with `decoded_cache`. The stream is a
    `tf.data.Dataset.from_generator` that yields, per step, that step's examples packed into
    one array per feature (values of varying shape flattened and concatenated, with their
    shapes), unpacked and split into examples by graph ops. Nothing of the store is captured
    in a tf.data graph, which tf.data would have to serialise (and cannot beyond 2 GB).
    """

    def __init__(self, element_spec: Any, columns: list[list[Any]]):
        self.element_spec, self.columns = element_spec, columns
        self.specs = tf.nest.flatten(element_spec)
        for spec in self.specs:
            if not isinstance(spec, tf.TensorSpec):
                raise TypeError(f"the training store holds dense tensors only, not {spec}.")
        self.fixed = [spec.shape.is_fully_defined() for spec in self.specs]

    @classmethod
    def read(cls, ds: tf.data.Dataset) -> "ShareStore":
        """Reads all of `ds` (one pass)."""
        columns: list[list[Any]] = [[] for _ in tf.nest.flatten(ds.element_spec)]
        for example in tfds.as_numpy(ds):
            for column, value in zip(columns, tf.nest.flatten(example)):
                column.append(value)
        return cls(ds.element_spec, columns)

    def __len__(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @property
    def nbytes(self) -> int:
        """Bytes of the examples' values (not counting Python's per-object overhead)."""
        return sum(len(v) if isinstance(v, bytes) else np.asarray(v).nbytes for c in self.columns for v in c)

    def _signature(self) -> dict[str, tf.TensorSpec]:
        signature = {}
        for i, (spec, fixed) in enumerate(zip(self.specs, self.fixed)):
            if fixed:
                signature[f"v{i}"] = tf.TensorSpec([None, *spec.shape], spec.dtype)
            else:
                signature[f"v{i}"] = tf.TensorSpec([None], spec.dtype)
                signature[f"s{i}"] = tf.TensorSpec([None, spec.shape.rank], tf.int64)
        return signature

    def batch(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """The examples at `positions` packed (see the class docstring)."""
        packed = {}
        for i, (spec, fixed, column) in enumerate(zip(self.specs, self.fixed, self.columns)):
            values = [column[p] for p in positions]
            if fixed:
                packed[f"v{i}"] = np.asarray(values, dtype=object if spec.dtype == tf.string else
                                             spec.dtype.as_numpy_dtype)
            else:
                packed[f"v{i}"] = np.concatenate([np.asarray(v).reshape(-1) for v in values])
                packed[f"s{i}"] = np.asarray([np.shape(v) for v in values], np.int64).reshape(len(values), -1)
        return packed

    def stream(self, stream: order.Stream, start_step: int) -> tf.data.Dataset:
        """The examples of `stream` from step `start_step` on, one by one (infinite)."""
        if len(self) != stream.share_size:
            raise ValueError(f"the store holds {len(self)} examples, the stream's share {stream.share_size}.")

        def steps() -> Iterator[dict[str, np.ndarray]]:
            for step in itertools.count(start_step):
                yield self.batch(stream.positions(step))

        def unpack(packed: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            out = {}
            for i, fixed in enumerate(self.fixed):
                if fixed:
                    out[f"v{i}"] = packed[f"v{i}"]
                else:
                    out[f"v{i}"] = tf.RaggedTensor.from_row_lengths(
                        packed[f"v{i}"], tf.reduce_prod(packed[f"s{i}"], axis=1))
                    out[f"s{i}"] = packed[f"s{i}"]
            return out

        def example(flat: dict[str, tf.Tensor]) -> Example:
            leaves = [flat[f"v{i}"] if fixed else tf.ensure_shape(tf.reshape(flat[f"v{i}"], flat[f"s{i}"]), spec.shape)
                      for i, (spec, fixed) in enumerate(zip(self.specs, self.fixed))]
            return tf.nest.pack_sequence_as(self.element_spec, leaves)

        ds = tf.data.Dataset.from_generator(steps, output_signature=self._signature())
        ds = ds.map(unpack).unbatch().map(example, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


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
    """The key that example seeds are folded from: distinct per (seed, process_index)."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([seed, process_index], tf.int64), _AUGMENTATION_STREAM)


def _padding(element_spec: Mapping[str, tf.TensorSpec], count: int) -> tf.data.Dataset:
    """`count` all-zero examples with `mask=False`, matching `element_spec`."""
    for key, spec in element_spec.items():
        if not spec.shape.is_fully_defined():
            raise ValueError(f"pad_last_batch needs fixed shapes; {key!r} has {spec.shape}.")
    zeros = {key: tf.zeros(spec.shape, spec.dtype) for key, spec in element_spec.items()}
    zeros["mask"] = tf.constant(False)
    return tf.data.Dataset.from_tensors(zeros).repeat(count)
