"""Median train-step time of the cluttered-MNIST attention CNN (AD=4, AW=2, released preset)
against the plain CNN (AD=0): batch 128 of 40x40 images, one jitted step, on this machine.

    python benchmarks/train_step.py [--batch 128] [--repeats 20]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine, median_time  # noqa: E402
from configs import cluttered_mnist  # noqa: E402
from wrna_jax import parallel, steps  # noqa: E402
from wrna_jax.models import create_model  # noqa: E402
from wrna_jax.state import create_train_state  # noqa: E402


def step_time(config, batch_size: int, repeats: int) -> float:
    model = create_model(config)
    mesh = parallel.create_mesh(1)
    state = create_train_state(config, model, (40, 40, 1), mesh, steps_per_epoch=100)
    step = steps.make_train_step(config, model, mesh, steps_per_epoch=100)
    rng = np.random.default_rng(0)
    batch = parallel.shard_batch({"image": rng.random((batch_size, 40, 40, 1), np.float32),
                                  "label": rng.integers(0, 10, batch_size).astype(np.int32),
                                  "mask": np.ones(batch_size, bool)}, parallel.batch_sharding(mesh))
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], batch)
        return metrics["loss"]

    return median_time(run, warmup=3, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"batch {args.batch}, 40x40x1, float32, median of {args.repeats} steps")
    times = {}
    for name, arg in (("baseline (AD=0)", "baseline"), ("attention (AD=4, AW=2, released)", None)):
        times[name] = step_time(cluttered_mnist.get_config(arg), args.batch, args.repeats)
        print(f"{name:36s} {1000 * times[name]:8.1f} ms/step  {args.batch / times[name]:8.0f} images/s")
    base, att = times.values()
    print(f"attention / baseline step time: {att / base:.3f}")


if __name__ == "__main__":
    main()
