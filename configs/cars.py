"""Stanford Cars (TFDS cars196); released run: 89.6%, paper 87.8 -> 90.0.

    python train.py --config=configs/cars.py --workdir=runs/cars            # released recipe
    python train.py --config=configs/cars.py:paper --workdir=runs/cars_paper  # paper recipe
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return fine_grained.get_config("cars196", 196, head_lr=0.2, width=4, gate_fn="softmax", output="all",
                                   bn_group_size=32,
                                   arg=arg)
