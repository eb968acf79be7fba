"""UEC Food-100 (manual download, see README); released run: 85.9%, paper 84.3 -> 85.5.

    python train.py --config=configs/uec_food100.py --workdir=runs/uec_food100            # released recipe
    python train.py --config=configs/uec_food100.py:paper --workdir=runs/uec_food100_paper  # paper recipe
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return fine_grained.get_config("uec_food100", 100, head_lr=0.2, width=2, gate_fn="softmax", output="all",
                                   bn_group_size=32,
                                   arg=arg)
