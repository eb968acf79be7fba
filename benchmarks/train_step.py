"""Median train-step time of the cluttered-MNIST CNN, ours (JAX) against the same network and step
in PyTorch, measured in the same run: the plain CNN (AD=0), the default attention (AD=4, AW=2,
master module) and the dev branch's module (attend_rectify, AD=4, AW=2). Batch 128 of 40x40
images, float32, SGD with momentum, on this machine's cores.

    python benchmarks/train_step.py [--batch 128] [--repeats 20] [--bn-variance both]

`--bn-variance both` times our side twice in the same run: with the BatchNorm variance as the
code computes it (two passes, `normalization._variance`) and with the one-pass E[x^2] - E[x]^2
it replaced, so their ratio is measured on one machine state.

PyTorch's side is our transcription of the authors' networks (tests/torch_reference.py), its
`torch.optim.SGD` step, with as many threads as JAX's CPU backend uses (benchmarks/common.py);
skipped, with a message, when torch is not installed.
"""

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (machine, median_time, one_pass_variance, time_train_step,  # noqa: E402
                               torch_reference)
from configs import cluttered_mnist  # noqa: E402
from wrna_jax import parallel, xla_flags  # noqa: E402
from wrna_jax.models import create_model, normalization  # noqa: E402
from wrna_jax.state import create_train_state  # noqa: E402

# name -> (config argument, attention preset, torch network: (class name, AD))
VARIANTS = {"baseline (AD=0)": ("baseline", None, ("MasterMnistNet", 0)),
            "attention (AD=4, AW=2, released)": (None, None, ("MasterMnistNet", 4)),
            "attend_rectify (AD=4, AW=2, dev)": (None, "attend_rectify", ("DevMnistNet", 4))}


def jax_step_time(arg: str | None, preset: str | None, batch_size: int, repeats: int) -> float:
    config = cluttered_mnist.get_config(arg)
    if preset:
        config.attention.preset = preset
    model = create_model(config)
    mesh = parallel.create_mesh(1)
    state = create_train_state(config, model, (40, 40, 1), mesh, steps_per_epoch=100)
    return time_train_step(config, model, state, mesh, (40, 40, 1), batch_size, repeats)


def torch_step_time(reference: Any, network: tuple[str, int], batch_size: int, repeats: int) -> float:
    """The same step in PyTorch (`reference`: benchmarks.common.torch_reference()): forward, NLL
    loss plus 0.1 x the regulariser, backward, SGD (lr 0.1, momentum 0.9, weight decay 1e-5: the
    authors' train_mnist.py)."""
    import torch
    import torch.nn.functional as F

    name, depth = network
    torch.manual_seed(0)
    net = getattr(reference, name)(depth, 2).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-5)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((batch_size, 1, 40, 40), np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, batch_size))

    def run():
        optimizer.zero_grad()
        log_probs, reg = net(images)
        (F.nll_loss(log_probs, labels) + 0.1 * reg).backward()
        optimizer.step()

    return median_time(run, warmup=3, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--bn-variance", choices=("two-pass", "both"), default="two-pass",
                        help="'both': also time ours with the one-pass BatchNorm variance")
    args = parser.parse_args()
    xla_flags.apply_cpu_defaults()
    reference = torch_reference()
    print(f"machine: {machine()}")
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')}")
    if reference is None:
        print("PyTorch is not installed: timing ours only (pip install torch --index-url "
              "https://download.pytorch.org/whl/cpu for the side-by-side figures).")
    else:
        print(f"torch {reference.torch.__version__}, {reference.torch.get_num_threads()} threads")
    print(f"batch {args.batch}, 40x40x1, float32, median of {args.repeats} steps")
    print(f"{'network':36s} {'ours ms':>9s} {'img/s':>7s} {'PyTorch ms':>11s} {'img/s':>7s} {'ours/PyTorch':>13s}")
    for name, (arg, preset, network) in VARIANTS.items():
        ours = jax_step_time(arg, preset, args.batch, args.repeats)
        line = f"{name:36s} {1000 * ours:9.1f} {args.batch / ours:7.0f}"
        if reference is not None:
            theirs = torch_step_time(reference, network, args.batch, args.repeats)
            line += f" {1000 * theirs:11.1f} {args.batch / theirs:7.0f} {ours / theirs:13.2f}"
        print(line, flush=True)
    if args.bn_variance == "both":
        print(f"{'network':36s} {'two-pass ms':>12s} {'one-pass ms':>12s} {'two/one':>8s}")
        two_pass = normalization._variance
        for name, (arg, preset, _) in VARIANTS.items():
            times = []
            for variance in (two_pass, one_pass_variance):
                normalization._variance = variance
                times.append(jax_step_time(arg, preset, args.batch, args.repeats))
            normalization._variance = two_pass
            print(f"{name:36s} {1000 * times[0]:12.1f} {1000 * times[1]:12.1f} {times[0] / times[1]:8.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
