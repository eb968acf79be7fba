"""Data parallelism under `jax.jit`: a 1-D device mesh, batch sharded, state replicated.

Each process feeds its own slice of the global batch; `jax.make_array_from_process_local_data`
assembles the global array, so the same code runs on one CPU, one multi-GPU host or many
hosts. BatchNorm statistics are means over the global batch because the step is one global
computation that XLA partitions.
"""

import collections
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wrna_jax.errors import ConfigError

DATA_AXIS = "data"


def create_mesh(num_devices: int | None = None) -> Mesh:
    """A mesh over the first `num_devices` devices (all when None), along the batch axis."""
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ConfigError(f"num_devices={num_devices}, but {len(devices)} device(s) are "
                              f"available: use 1..{len(devices)} or None for all.")
        if jax.process_count() > 1 and num_devices != len(devices):
            raise ConfigError("num_devices must be None (all devices) in a multi-process run.")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def local_mesh(mesh: Mesh) -> Mesh:
    """The devices of `mesh` this process drives, in the mesh's order, as a mesh of their own
    (`mesh` itself with one process). A process's rows of a global batch sharded with
    `batch_sharding(mesh)` are its devices' shards in this order."""
    if jax.process_count() == 1:
        return mesh
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    if len(local) * jax.process_count() != mesh.devices.size:
        raise ValueError(f"the mesh's {mesh.devices.size} devices are not shared equally by "
                         f"{jax.process_count()} processes.")
    return Mesh(np.asarray(local), mesh.axis_names)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> int:
    """This process's share of `global_batch`; a clear error when it does not divide evenly."""
    devices = mesh.devices.size
    if global_batch % devices:
        lower = global_batch - global_batch % devices
        raise ConfigError(f"{what}={global_batch} is not divisible by the {devices} devices of the "
                          f"mesh: use a multiple of {devices} (e.g. {lower or devices} or "
                          f"{lower + devices}).")
    return global_batch // jax.process_count()


def shard_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's numpy batch -> global arrays sharded along the batch axis."""
    return {key: jax.make_array_from_process_local_data(sharding, value)
            for key, value in batch.items()}


def prefetch_to_mesh(batches: Iterable[dict[str, np.ndarray]], sharding: NamedSharding,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
    """Keeps `size` batches in flight on the devices so host-to-device copies overlap compute."""
    queue: collections.deque[Any] = collections.deque()
    iterator = iter(batches)
    for batch in iterator:
        queue.append(shard_batch(batch, sharding))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
