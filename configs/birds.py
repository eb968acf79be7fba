"""CUB-200-2011 (TFDS caltech_birds2011); released run: 83.6%, paper 81.0 -> 82.0.

    python train.py --config=configs/birds.py --workdir=runs/birds            # released recipe
    python train.py --config=configs/birds.py:paper --workdir=runs/birds_paper  # paper recipe
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return fine_grained.get_config("caltech_birds2011", 200, head_lr=0.1, width=2, gate_fn="sigmoid", output="50",
                                   bn_group_size=16,
                                   arg=arg)
