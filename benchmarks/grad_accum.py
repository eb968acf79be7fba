"""Gradient accumulation on the CPU: the median train-step time of the cluttered-MNIST attention
CNN (AD=4, AW=2, float32) for one batch split into k micro-batches, as `steps.train_step` runs
them (the micro-batch loop unrolled) and with the same loop rolled (`lax.scan`'s default, what
the step did before), measured in the same run; k = 1 is the step without accumulation.

    python benchmarks/grad_accum.py [--batch 128] [--repeats 10] [--ks 2,4]

The rolled variant is the same step traced while `jax.lax.scan` defaults to unroll=1: only the
loop's form differs, so the ratio is the cost of XLA:CPU's loop.
"""

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Iterator

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine, time_train_step  # noqa: E402
from configs import cluttered_mnist  # noqa: E402
from wrna_jax import parallel, xla_flags  # noqa: E402
from wrna_jax.models import create_model  # noqa: E402
from wrna_jax.state import create_train_state  # noqa: E402


@contextlib.contextmanager
def rolled_scan() -> Iterator[None]:
    """Traces `lax.scan` with unroll=1 whatever its caller asks (the rolled loop)."""
    original = jax.lax.scan

    @functools.wraps(original)
    def scan(*args, **kwargs):
        kwargs["unroll"] = 1
        return original(*args, **kwargs)

    jax.lax.scan = scan
    try:
        yield
    finally:
        jax.lax.scan = original


def step_time(k: int, batch: int, repeats: int, rolled: bool) -> float:
    config = cluttered_mnist.get_config()
    config.update(batch_size=batch, grad_accum_steps=k)
    model = create_model(config)
    mesh = parallel.create_mesh(1)
    state = create_train_state(config, model, (40, 40, 1), mesh, steps_per_epoch=100)
    with rolled_scan() if rolled else contextlib.nullcontext():
        return time_train_step(config, model, state, mesh, (40, 40, 1), batch, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--ks", default="2,4", help="micro-batch counts to time besides 1")
    args = parser.parse_args()
    print(machine())
    print(f"cluttered-MNIST attention CNN, batch {args.batch}, float32; median of {args.repeats} steps")
    single = step_time(1, args.batch, args.repeats, rolled=False)
    print(f"k=1 (no accumulation)        {1e3 * single:8.1f} ms")
    for k in (int(k) for k in args.ks.split(",")):
        unrolled = step_time(k, args.batch, args.repeats, rolled=False)
        rolled = step_time(k, args.batch, args.repeats, rolled=True)
        print(f"k={k} unrolled (as trained)    {1e3 * unrolled:8.1f} ms  {unrolled / single:5.2f}x k=1")
        print(f"k={k} rolled loop              {1e3 * rolled:8.1f} ms  {rolled / single:5.2f}x k=1, "
              f"{rolled / unrolled:5.2f}x unrolled")


if __name__ == "__main__":
    xla_flags.apply_cpu_defaults()
    main()
