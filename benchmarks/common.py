"""Timing helpers shared by the benchmarks: medians of synchronised step times, machine info."""

import os
import platform
import statistics
import sys
import time
from typing import Any, Callable


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def torch_reference() -> Any:
    """tests/torch_reference.py (our PyTorch transcriptions) with torch set to `usable_cores()`
    threads, as JAX's CPU backend uses; None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(usable_cores())
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import torch_reference as module

    return module


def cpu_description() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and the cores this process may use."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}; {usable_cores()} cores; load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> str:
    """One line naming the CPU, core count and JAX backend/devices the figures came from."""
    import jax

    devices = jax.devices()
    return (f"{cpu_description()}; jax {jax.__version__} on {devices[0].platform} "
            f"({len(devices)} x {devices[0].device_kind})")


def median_time(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10) -> float:
    """Median wall time of `fn()` in seconds, waiting for its results each time."""
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_train_step(config: Any, model: Any, state: Any, mesh: Any, input_shape: tuple, batch_size: int,
                    repeats: int, warmup: int = 3) -> float:
    """Median time of one jitted train step (wrna_jax.steps) on a random batch of `batch_size`
    images of `input_shape`, as training runs it, the state carried from step to step."""
    import numpy as np

    from wrna_jax import parallel, steps

    step = steps.make_train_step(config, model, mesh, steps_per_epoch=100)
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch({"image": rng.random((batch_size, *input_shape), np.float32),
                                  "label": rng.integers(0, model.num_classes, batch_size).astype(np.int32),
                                  "mask": np.ones(batch_size, bool)}, parallel.batch_sharding(mesh))
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], batch)
        return metrics["loss"]

    return median_time(run, warmup=warmup, repeats=repeats)


def matmul_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of the convolutions and matrix products in `fn(*args)` (2 per multiply-add), read
    from its jaxpr: the usual model-FLOPs count, the same on every backend (a compiled GPU
    program's cost analysis misses the convolutions that run in cuDNN)."""
    import jax
    import jax.extend.core
    import numpy as np

    def count(jaxpr: Any) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                (lhs_contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[d] for d in lhs_contract])
            elif name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape
                spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, spatial...)
                per_output = np.prod([rhs[d] for d in spec[1:]])
                total += 2.0 * np.prod(eqn.outvars[0].aval.shape) * per_output
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                total += count(getattr(sub, "jaxpr", sub))
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


def one_pass_variance(x: Any, mean: Any, centred: Any, mean_of: Callable) -> Any:
    """E[x^2] - E[x]^2 (clipped at 0), the one-pass BatchNorm variance, in the signature of
    wrna_jax.models.normalization._variance: timed against the two-pass form the code uses."""
    import jax.numpy as jnp

    del centred
    return jnp.maximum(mean_of(jnp.square(x)) - jnp.square(mean), 0.0)


def traced_with(module: Any, name: str, value: Any, fn: Callable) -> Callable:
    """`fn` with `module.name` set to `value` while it runs (so while jax.jit traces it)."""
    def run(*args: Any) -> Any:
        saved = getattr(module, name)
        setattr(module, name, value)
        try:
            return fn(*args)
        finally:
            setattr(module, name, saved)

    return run
