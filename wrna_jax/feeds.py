"""The input of the one training loop and the one evaluation loop, chosen by `config.input.feed`:

* 'host': the TFDS/tf.data pipeline (`data/input.py`, `data/pipeline.py`): every example is
  read, decoded and augmented on the host's CPUs and each batch is copied to the devices.
* 'device': splits held in accelerator memory as uint8 arrays (`data/arrays.py`): each process
  holds its share of every split (positions p, p + P, ... of the split, `order.share`; with one
  process the whole split), replicated over its own devices; batches are gathered and augmented
  there by compiled code (`data/device_preprocessing.py`) in the order of `data/order.py`, and
  the processes' rows make the global batch. Needs no TensorFlow once the arrays exist
  (`data/array_sources.py`).
* 'auto': 'device' when the family has device preprocessing, the arrays exist or can be made,
  and they fit in `config.input.memory_fraction` of one device's memory; else 'host', said in
  one line. Both read the training examples in the order of `data/order.py` (the same
  examples at every step for a seed); a resumed run keeps the feed it was started with, since
  their augmentation draws differ (TensorFlow's stateless ops against `jax.random`).

Both give the same thing to the loops: iterators of global batches {'image', 'label', 'mask'}
sharded along the mesh's batch axis, so the training step, the evaluation step and the
evaluators do not know which feed they read.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wrna_jax import parallel
from wrna_jax.data import array_sources, arrays, holdout, order
from wrna_jax.data.device_preprocessing import DEVICE_PREPROCESSING
from wrna_jax.data.registry import DatasetSpec, dataset_spec
from wrna_jax.errors import ConfigError

FEEDS = ("host", "device", "auto")
Batch = dict[str, jax.Array]


class Feed(Protocol):
    """What the loops and evaluators read of a dataset, whichever feed holds it."""

    kind: str
    input_shape: tuple[int, ...]
    num_classes: int

    def split(self, field: str) -> str: ...
    def split_names(self) -> list[str]: ...
    def has_split(self, split: str) -> bool: ...
    def num_examples(self, split: str) -> int: ...
    def class_names(self) -> list[str]: ...
    def train_batches(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                      start_step: int) -> Iterator[Batch]: ...
    def eval_batches(self, split: str, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                     ten_crop: bool | None = None) -> Iterator[Batch]: ...


class HostFeed:
    """The tf.data pipeline of `data/input.py`, its batches copied to the mesh."""

    kind = "host"

    def __init__(self, data: Any):
        self.data = data
        self.input_shape, self.num_classes = data.input_shape, data.num_classes

    def split(self, field: str) -> str:
        return self.data.split(field)

    def split_names(self) -> list[str]:
        return sorted(self.data.builder.info.splits)

    def has_split(self, split: str) -> bool:
        return self.data.has_split(split)

    def num_examples(self, split: str) -> int:
        return self.data.num_examples(split)

    def class_names(self) -> list[str]:
        return self.data.class_names()

    def train_batches(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                      start_step: int) -> Iterator[Batch]:
        local_batch = parallel.check_batch_size(config.batch_size, mesh)
        batches = self.data.train_batches(local_batch, seed=config.seed, start_step=start_step,
                                          process_index=jax.process_index(), process_count=jax.process_count())
        return parallel.prefetch_to_mesh(batches, parallel.batch_sharding(mesh))

    def eval_batches(self, split: str, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                     ten_crop: bool | None = None) -> Iterator[Batch]:
        """The whole `split` of this process, padded to full global batches (`mask` False on
        the padding); `ten_crop` overrides the dataset's setting."""
        local_batch = parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
        batches = self.data.eval_batches(split, local_batch, ten_crop=ten_crop, process_index=jax.process_index(),
                                         process_count=jax.process_count())
        return parallel.prefetch_to_mesh(batches, parallel.batch_sharding(mesh))


class DeviceFeed:
    """Splits held in device memory, gathered and augmented by compiled code (module docstring)."""

    kind = "device"

    def __init__(self, dataset: Mapping[str, Any], mesh: jax.sharding.Mesh, **overrides: Any):
        self.dataset, self.mesh, self.overrides = dataset, mesh, overrides
        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.local_mesh = parallel.local_mesh(mesh)
        self.spec: DatasetSpec = dataset_spec(dataset)
        self.num_classes = self.spec.num_classes
        self.preprocess = functools.partial(DEVICE_PREPROCESSING[self.spec.family], **self._settings())
        self._host: dict[str, arrays.ImageArrays] = {}
        self._device: dict[str, dict[str, jax.Array]] = {}
        self._held_out: np.ndarray | None = None
        self._gathers: dict[tuple[bool, bool], Any] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model's input shape: one preprocessed example of a split already read (else test)."""
        first = next(iter(self._host.values()), None) or self._source(self.spec.split(self.dataset, "test_split"))
        return tuple(jax.eval_shape(
            lambda a: self.preprocess(a["images"], a["sizes"], a["transposed"], None),
            {"images": jax.ShapeDtypeStruct((1, *first.images.shape[1:]), jnp.uint8),
             "sizes": jax.ShapeDtypeStruct((1, 2), jnp.int32),
             "transposed": jax.ShapeDtypeStruct((1,), jnp.bool_)}).shape[1:])

    def _settings(self, ten_crop: bool = False) -> dict[str, Any]:
        images = self.dataset.get("images") or {}
        return dict(image_size=images.get("image_size"), ten_crops=ten_crop, mean=self.spec.mean, std=self.spec.std)

    # Splits -----------------------------------------------------------------------------------

    def split(self, field: str) -> str:
        return holdout.split_name(self.spec, self.dataset, field)

    def split_names(self) -> list[str]:
        names = {self.spec.split(self.dataset, f) for f in ("train_split", "eval_split", "test_split")}
        return sorted(names | ({holdout.HELD_OUT} if holdout.protocol(self.dataset) == "holdout" else set()))

    def has_split(self, split: str) -> bool:
        return split in self.split_names()

    def _held_out_indices(self) -> np.ndarray:
        if self._held_out is None:
            section = self.dataset["validation"]
            labels = np.asarray(self._source(self.spec.split(self.dataset, "train_split")).labels)
            self._held_out = holdout.held_out_indices(labels, section["fraction"], section["seed"])
        return self._held_out

    def _source(self, name: str) -> arrays.ImageArrays:
        if name not in self._host:
            self._host[name] = array_sources.split_arrays(self.dataset, name, **self.overrides)
        return self._host[name]

    def _selection(self, split: str) -> tuple[str, np.ndarray | None]:
        """The source split that `split` reads and the examples of it it keeps (None: all): the
        held-out examples, or the rest of train, under the 'holdout' protocol."""
        base = self.spec.split(self.dataset, "train_split")
        if split == holdout.HELD_OUT:
            if holdout.protocol(self.dataset) != "holdout":
                raise ConfigError(f"split {split!r} exists only with config.dataset.validation.protocol='holdout'.")
            return base, self._held_out_indices()
        if split == base and holdout.protocol(self.dataset) == "holdout":
            return base, np.setdiff1d(np.arange(self._source(base).num_examples), self._held_out_indices())
        return split, None

    def host_arrays(self, split: str) -> arrays.ImageArrays:
        """`split` on the host (a copy in memory when it is a selection of its source)."""
        source, kept = self._selection(split)
        return self._source(source) if kept is None else self._source(source).take(kept)

    def share(self, split: str) -> arrays.ImageArrays:
        """This process's share of `split` on the host: positions p, p + P, ... (`order.share`)."""
        host = self.host_arrays(split)
        if self.process_count == 1:
            return host
        return host.take(order.share(host.num_examples, self.process_index, self.process_count))

    def split_bytes(self, split: str) -> int:
        """Bytes this process's share of `split` takes on each of its devices."""
        source, _ = self._selection(split)
        whole = self._source(source)
        held = len(order.share(self.num_examples(split), self.process_index, self.process_count))
        return whole.nbytes * held // max(whole.num_examples, 1)

    def num_examples(self, split: str) -> int:
        source, kept = self._selection(split)
        return self._source(source).num_examples if kept is None else len(kept)

    def class_names(self) -> list[str]:
        """The label names stored with prepared arrays, else '0', '1', ..."""
        names = None
        for field in ("train_split", "test_split") if self.spec.arrays is None else ():
            directory = array_sources.prepared_dir(self.dataset, self.spec.split(self.dataset, field))
            if arrays.exists(directory):
                names = arrays.load(directory)[1].get("class_names")
                break
        return list(names) if names and len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]

    def upload(self, split: str) -> dict[str, jax.Array]:
        """This process's share of `split` in device memory, replicated over its devices
        (uploaded once)."""
        if split not in self._device:
            held = self.share(split)
            if held.num_examples == 0:
                raise ConfigError(f"split {split!r} has {self.num_examples(split)} examples: too few for "
                                  f"{self.process_count} processes to hold one each.")
            replicated = parallel.replicated(self.local_mesh)
            self._device[split] = {name: _put(np.asarray(getattr(held, name)), replicated) for name in arrays.FILES}
        return self._device[split]

    # Batches ----------------------------------------------------------------------------------

    def _gather(self, train: bool, ten_crop: bool = False):
        """Compiled (share arrays, indices, positions or mask) -> this process's rows of a batch,
        sharded over its devices (one program per kind of batch, kept for every later call)."""
        if (train, ten_crop) in self._gathers:
            return self._gathers[train, ten_crop]
        preprocess = functools.partial(DEVICE_PREPROCESSING[self.spec.family], **self._settings(ten_crop))
        sharding = parallel.batch_sharding(self.local_mesh)

        def gather(split: Mapping[str, jax.Array], indices: jax.Array, extra: jax.Array, seed: int) -> Batch:
            picked = {name: split[name][indices] for name in arrays.FILES}
            keys = None
            if train:
                base = jax.random.fold_in(jax.random.PRNGKey(seed), order.AUGMENTATION_STREAM)
                keys = jax.vmap(lambda position: jax.random.fold_in(base, position))(extra)
            images = preprocess(picked["images"], picked["sizes"], picked["transposed"], keys)
            mask = jnp.ones(len(indices), bool) if train else extra
            return jax.lax.with_sharding_constraint(
                {"image": images, "label": picked["labels"], "mask": mask}, sharding)

        self._gathers[train, ten_crop] = jax.jit(gather, static_argnums=3, out_shardings=sharding)
        return self._gathers[train, ten_crop]

    def train_batches(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                      start_step: int) -> Iterator[Batch]:
        """Global batches from step `start_step` of the stream (`data/order.py`) on: each
        process gathers its rows of the batch, its share's step in the host feed's order, from
        the share it holds, so with one process both feeds read the same examples at every step."""
        parallel.check_batch_size(config.batch_size, mesh)
        train_split = self.split("train_split")
        held = self.upload(train_split)
        devices = mesh.devices.flat
        row_processes = np.repeat([d.process_index for d in devices], config.batch_size // mesh.devices.size)
        streams = order.GlobalStream(config.seed, self.num_examples(train_split), row_processes)
        rows, stream = streams.rows[self.process_index], streams.streams[self.process_index]
        gather = self._gather(train=True)
        replicated = parallel.replicated(self.local_mesh)
        for step in itertools.count(start_step):
            position = (step * config.batch_size + rows).astype(np.uint32)  # keys fold in 32 bits
            local = gather(held, _put(stream.positions(step).astype(np.int32), replicated),
                           _put(position, replicated), config.seed)
            yield self._global(local, mesh)

    def eval_batches(self, split: str, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                     ten_crop: bool | None = None) -> Iterator[Batch]:
        """All of `split` in full global batches, each process's rows from its share in order
        (`mask` False past its end); every process yields the same number of batches."""
        batch_size = config.eval_batch_size
        local_batch = parallel.check_batch_size(batch_size, mesh, "eval_batch_size")
        if ten_crop is None:
            ten_crop = bool((self.dataset.get("images") or {}).get("ten_crop", False))
        held = self.upload(split)
        count = int(held["labels"].shape[0])
        gather = self._gather(train=False, ten_crop=ten_crop)
        replicated = parallel.replicated(self.local_mesh)
        largest_share = math.ceil(self.num_examples(split) / self.process_count)
        for start in range(0, largest_share, local_batch):
            index = start + np.arange(local_batch)
            local = gather(held, _put(np.minimum(index, count - 1).astype(np.int32), replicated),
                           _put(index < count, replicated), 0)
            yield self._global(local, mesh)

    def _global(self, local: Batch, mesh: jax.sharding.Mesh) -> Batch:
        """This process's rows (sharded over its devices in the mesh's order) -> the global batch
        sharded over the mesh: the shards stay where they are."""
        if self.process_count == 1:
            return local
        sharding = parallel.batch_sharding(mesh)
        return {name: jax.make_array_from_single_device_arrays(
                    (value.shape[0] * self.process_count, *value.shape[1:]), sharding,
                    [shard.data for shard in value.addressable_shards])
                for name, value in local.items()}


def _put(array: np.ndarray, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """A host array -> an array with `sharding` (over this process's devices, or every process
    holding `array` whole)."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


# Choosing the feed ----------------------------------------------------------------------------

def device_memory(mesh: jax.sharding.Mesh) -> int:
    """Bytes of memory of one device of the mesh; on the CPU, the host's memory shared by its
    local devices."""
    device = next(d for d in mesh.devices.flat if d.process_index == jax.process_index())
    stats = device.memory_stats()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(1, jax.local_device_count())


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported here (the host feed and preparation need it)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def describe_bytes(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def choose(config: ml_collections.ConfigDict, saved: str | None = None) -> str:
    """'host' or 'device' for `config.input.feed` (`saved`: the feed of the run being resumed);
    a one-line ConfigError when the asked-for feed cannot be used, before anything is loaded."""
    asked = config.input.feed
    if asked not in FEEDS:
        raise ConfigError(f"config.input.feed={asked!r}: use one of {', '.join(map(repr, FEEDS))}.")
    if saved is not None:
        if asked not in ("auto", saved):
            raise ConfigError(f"config.input.feed={asked!r}, but the run in this workdir was fed by the {saved!r} "
                              "feed (the feeds draw their random augmentation differently): resume with "
                              f"--config.input.feed={saved} (or auto), or start a new run in another --workdir.")
        asked = saved
    spec = dataset_spec(config.dataset)
    device_ok = spec.family in DEVICE_PREPROCESSING
    if asked == "host":
        if not spec.host_feed:
            raise ConfigError(f"dataset {spec.name!r} has no TFDS builder and is fed from the device only: "
                              "use --config.input.feed=device (or auto).")
        return "host"
    if asked == "device" and not device_ok:
        raise ConfigError(f"dataset {spec.name!r} ({spec.family} preprocessing) has no device preprocessing: "
                          "use --config.input.feed=host.")
    if asked == "auto" and (not device_ok or (spec.host_feed and not _arrays_obtainable(config.dataset))):
        return "host"
    if not _arrays_obtainable(config.dataset):
        raise ConfigError(f"dataset {spec.name!r} is not prepared for the device feed under "
                          f"{os.path.dirname(array_sources.prepared_dir(config.dataset, 'x'))} and TensorFlow is "
                          "not installed to prepare it: run train.py once where TensorFlow is installed (it "
                          "prepares the arrays), or use --config.input.feed=host.")
    return "device"


def _arrays_obtainable(dataset: Mapping[str, Any]) -> bool:
    spec = dataset_spec(dataset)
    if spec.arrays is not None or tensorflow_installed():
        return True
    return all(array_sources.is_prepared(dataset, spec.split(dataset, field))
               for field in ("train_split", "test_split"))


def check_fits(feed: DeviceFeed, splits: tuple[str, ...], config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh) -> tuple[bool, str]:
    """Whether `splits` fit in the device feed's share of one device's memory, and the line that
    says how much they take."""
    needed = sum(feed.split_bytes(split) for split in splits)
    memory = device_memory(mesh)
    line = (f"device feed: {describe_bytes(needed)} resident per device ({', '.join(splits)}), "
            f"{100 * needed / memory:.1f}% of its {describe_bytes(memory)} (at most "
            f"{100 * config.input.memory_fraction:.0f}%: config.input.memory_fraction)")
    return needed <= config.input.memory_fraction * memory, line


def create_feed(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, splits: tuple[str, ...], *,
                saved: str | None = None, kind: str | None = None, announce: Any = print,
                **overrides: Any) -> Feed:
    """The feed of `config` holding `splits` (fields such as 'train_split' or split names):
    `kind` forces one ('host' / 'device'), else `choose`. With the device feed, the splits must
    fit (`check_fits`): 'device' refuses in one line naming the host feed, 'auto' falls back to
    it, saying so through `announce`."""
    kind = kind or choose(config, saved)
    if kind == "device":
        feed = DeviceFeed(config.dataset, mesh, **overrides)
        names = {}
        for split in splits:
            field = split.endswith("_split")
            name = feed.split(split) if field else split
            if not feed.has_split(name):
                what = f"config.dataset.{split}" if field else "--split"
                raise ConfigError(f"{what}={name!r}: the dataset has splits {feed.split_names()}.")
            names[name] = None
        names = tuple(names)
        fits, line = check_fits(feed, names, config, mesh)
        if fits:
            announce(line)
            return feed
        if config.input.feed == "device" or not dataset_spec(config.dataset).host_feed:
            raise ConfigError(f"{line}: it does not fit; use --config.input.feed=host, or raise "
                              "config.input.memory_fraction.")
        announce(f"{line}: does not fit, using the host feed.")
    from wrna_jax.data.input import create_input  # TensorFlow: only for the host feed

    return HostFeed(create_input(config.dataset, **overrides))
