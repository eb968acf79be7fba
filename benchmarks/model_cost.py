"""Cost of attention: parameters, FLOPs per image (XLA's cost analysis) and median CPU train-step
time of the plain backbone and of the three presets, as ratios measured in the same run.

    python benchmarks/model_cost.py [--wrn-batch 4] [--mnist-batch 128] [--repeats 5]
    python benchmarks/model_cost.py --rectify-sums both [--dtype bfloat16]

Models: WRN-50-2 at 224x224 with Stanford Dogs' 120 classes (the dev module's per-position
logits grow with the classes) and the cluttered-MNIST CNN at 40x40; presets `paper` (AD=2, AW=2,
avg reduction), `released` (AD=3, AW=2, project reduction) and `attend_rectify` (AD=3, AW=2:
the released dogs setting). Where torch is installed, the plain backbones' step is also timed in
PyTorch in the same run (torchvision's WRN-50-2 layout and the authors' CNN, our transcriptions
in tests/torch_reference.py; SGD, as many threads as cores) and the ratio printed.

`--rectify-sums both` times only `attend_rectify`, in `--dtype`, twice in the same run: with the
masks' weighted sums in float32 (as the code runs them, `rectify.SUMS_DTYPE`) and in the compute
dtype.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine, median_time, time_train_step, torch_reference  # noqa: E402
from configs import default  # noqa: E402
from wrna_jax import parallel, xla_flags  # noqa: E402
from wrna_jax.models import create_model, rectify  # noqa: E402
from wrna_jax.state import create_train_state  # noqa: E402

VARIANTS = (("plain backbone", dict(depth=0)),
            ("paper AD=2 AW=2 avg", dict(preset="paper", depth=2, width=2, reduction="avg")),
            ("released AD=3 AW=2 project", dict(preset="released", depth=3, width=2, reduction="project")),
            ("attend_rectify AD=3 AW=2", dict(preset="attend_rectify", depth=3, width=2)))
BACKBONES = {"WRN-50-2 @224": (dict(backbone="imagenet_resnet", depth=50, width=2, num_classes=120), (224, 224, 3)),
             "cluttered-MNIST CNN @40": (dict(backbone="mnist_cnn", num_classes=10), (40, 40, 1))}


def measure(model_fields: dict, attention: dict, shape: tuple, batch: int, repeats: int,
            dtype: str = "float32") -> dict:
    config = default.get_config()
    config.model.update(model_fields, dtype=dtype)
    config.attention.update(attention)
    model = create_model(config)
    mesh = parallel.create_mesh(1)
    state = create_train_state(config, model, shape, mesh, steps_per_epoch=100)
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    forward = jax.jit(lambda s, x: model.apply({"params": s.params, "batch_stats": s.batch_stats}, x).log_probs)
    flops = forward.lower(state, jnp.zeros((batch, *shape))).compile().cost_analysis()["flops"] / batch
    return {"params": params, "flops": flops,
            "step": time_train_step(config, model, state, mesh, shape, batch, repeats, warmup=2)}


def torch_plain_step(backbone: str, shape: tuple, batch: int, repeats: int) -> float | None:
    """Median step time of the plain backbone in PyTorch, or None without torch."""
    reference = torch_reference()
    if reference is None:
        return None
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if "WRN" in backbone:
        net, classes = reference.WideResNet50_2(120), 120
        loss_fn = lambda out, labels: F.cross_entropy(out, labels)
    else:
        net, classes = reference.MasterMnistNet(0, 2), 10
        loss_fn = lambda out, labels: F.nll_loss(out[0], labels)
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images = torch.rand(batch, shape[2], shape[0], shape[1])
    labels = torch.randint(0, classes, (batch,))

    def run():
        optimizer.zero_grad()
        loss_fn(net(images), labels).backward()
        optimizer.step()

    return median_time(run, warmup=2, repeats=repeats)


def compare_rectify_sums(dtype: str, batches: dict, repeats: int) -> None:
    """attend_rectify's step with the weighted sums in float32 and in `dtype`, per backbone."""
    attention = dict(VARIANTS)["attend_rectify AD=3 AW=2"]
    print(f"\nattend_rectify AD=3 AW=2, {dtype} compute, median of {repeats}")
    print(f"{'backbone':26s} {'batch':>5s} {'GFLOPs/img':>11s} {'f32 sums ms':>12s} {f'{dtype} sums ms':>16s} "
          f"{'f32/other':>10s}")
    for name, (fields, shape) in BACKBONES.items():
        times = []
        for sums in (jnp.float32, None):
            rectify.SUMS_DTYPE = sums
            r = measure(fields, attention, shape, batches[name], repeats, dtype)
            times.append(r["step"])
        rectify.SUMS_DTYPE = jnp.float32
        print(f"{name:26s} {batches[name]:5d} {r['flops'] / 1e9:11.3f} {1000 * times[0]:12.1f} "
              f"{1000 * times[1]:16.1f} {times[0] / times[1]:10.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wrn-batch", type=int, default=4)
    parser.add_argument("--mnist-batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rectify-sums", choices=("float32", "both"), default="float32",
                        help="'both': only time attend_rectify with float32 and compute-dtype sums")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16",
                        help="compute dtype of --rectify-sums both")
    args = parser.parse_args()
    xla_flags.apply_cpu_defaults()
    print(f"machine: {machine()}")
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')}")
    if args.rectify_sums == "both":
        batches = {name: args.wrn_batch if "WRN" in name else args.mnist_batch for name in BACKBONES}
        compare_rectify_sums(args.dtype, batches, args.repeats)
        return
    for name, (fields, shape) in BACKBONES.items():
        batch = args.wrn_batch if "WRN" in name else args.mnist_batch
        print(f"\n{name}, train step at batch {batch}, float32, median of {args.repeats}")
        print(f"{'variant':28s} {'params':>12s} {'GFLOPs/img':>11s} {'x FLOPs':>8s} {'ms/step':>9s} {'x time':>7s}")
        base = None
        for variant, attention in VARIANTS:
            r = measure(fields, attention, shape, batch, args.repeats)
            base = base or r
            print(f"{variant:28s} {r['params']:12,d} {r['flops'] / 1e9:11.3f} {r['flops'] / base['flops']:8.3f} "
                  f"{1000 * r['step']:9.1f} {r['step'] / base['step']:7.3f}", flush=True)
        theirs = torch_plain_step(name, shape, batch, args.repeats)
        if theirs is None:
            print("PyTorch: not installed, no side-by-side figure")
        else:
            print(f"PyTorch plain backbone: {1000 * theirs:.1f} ms/step; ours/PyTorch {base['step'] / theirs:.2f}")


if __name__ == "__main__":
    main()
