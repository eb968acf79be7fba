"""Adience age groups (manual download, 5 folds: --config.dataset.fold=0..4; no released run: head lr 0.1, AW 2 chosen here); paper 58.6 -> 59.7.

    python train.py --config=configs/adience_age.py --workdir=runs/adience_age            # released recipe
    python train.py --config=configs/adience_age.py:paper --workdir=runs/adience_age_paper  # paper recipe
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return fine_grained.get_config("adience_age", 8, head_lr=0.1, width=2, gate_fn="softmax", output="all",
                                   bn_group_size=32,
                                   arg=arg)
