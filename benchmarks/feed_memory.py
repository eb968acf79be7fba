"""Device memory the device feed holds per device, for the datasets at their real sizes:

    python benchmarks/feed_memory.py [--resize_size 256] [--max_aspect_ratio 1.5]

Each example costs its stored image (uint8 S x L x 3 for fine-grained sets, where S is the
shorter side and L = floor(S x max_aspect_ratio): wrna_jax/data/arrays.py; 32 x 32 x 3 for CIFAR)
plus its size, orientation and label. Training holds the training split (the held-out
validation examples are part of it); eval.py holds the evaluated split. Every device holds all
of it (replicated). The split sizes are the datasets' published counts (UEC Food-100: the
5-fold split of wrna_jax/data/uec_food100.py, about 80% / 20% of its 14,361 boxes).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from wrna_jax.data import arrays  # noqa: E402

# (train, test) examples, fine-grained or not.
DATASETS = {
    "stanford_dogs": (12_000, 8_580, True),
    "caltech_birds2011": (5_994, 5_794, True),
    "cars196": (8_144, 8_041, True),
    "uec_food100 (fold 0)": (11_489, 2_872, True),
    "food101": (75_750, 25_250, True),
    "cifar10 / cifar100": (50_000, 10_000, False),
}
CARDS = {"H100 80 GB": 80e9, "H200 141 GB": 141e9}
PER_EXAMPLE_EXTRA = 4 * 2 + 1 + 4  # sizes (2 x int32), transposed (bool), label (int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resize_size", type=int, default=256)
    parser.add_argument("--max_aspect_ratio", type=float, default=1.5)
    args = parser.parse_args()
    long = arrays.long_side(args.resize_size, args.max_aspect_ratio)
    print(f"fine-grained layout {args.resize_size} x {long} x 3 uint8; CIFAR 32 x 32 x 3")
    print(f"| dataset | train (training holds) | test (eval.py holds) | "
          + " | ".join(f"train, % of {card}" for card in CARDS) + " |")
    print("|---|---:|---:|" + "---:|" * len(CARDS))
    for name, (train, test, fine) in DATASETS.items():
        image = args.resize_size * long * 3 if fine else 32 * 32 * 3
        each = image + PER_EXAMPLE_EXTRA
        shares = " | ".join(f"{100 * train * each / memory:.1f}%" for memory in CARDS.values())
        print(f"| {name} | {train * each / 1e9:.2f} GB | {test * each / 1e9:.2f} GB | {shares} |")


if __name__ == "__main__":
    main()
