"""Food-101 (TFDS food101; no released run: head lr 0.1 and AW 2 as for birds, with softmax).

    python train.py --config=configs/food101.py --workdir=runs/food101            # released recipe
    python train.py --config=configs/food101.py:paper --workdir=runs/food101_paper  # paper recipe
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = fine_grained.get_config("food101", 101, head_lr=0.1, width=2, gate_fn="softmax", output="all",
                                     bn_group_size=32,
                                     arg=arg, eval_split="validation", test_split="validation")
    config.dataset.cache = False  # About 5 GB of JPEGs: read from disk each epoch.
    return config
