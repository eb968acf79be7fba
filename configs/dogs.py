"""Stanford Dogs (TFDS stanford_dogs); released run: 92.89%, paper WRN 89.6 -> WRNA 89.9.

    python train.py --config=configs/dogs.py --workdir=runs/dogs            # released recipe
    python train.py --config=configs/dogs.py:paper --workdir=runs/dogs_paper  # paper recipe
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return fine_grained.get_config("stanford_dogs", 120, head_lr=0.005, width=2, gate_fn="softmax", output="all",
                                   bn_group_size=32,
                                   arg=arg)
