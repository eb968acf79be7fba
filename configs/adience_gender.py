"""Adience gender (manual download, 5 folds: --config.dataset.fold=0..4; no released run: head lr 0.1, AW 2 chosen here); paper 93.9 -> 94.8.

    python train.py --config=configs/adience_gender.py --workdir=runs/adience_gender            # released recipe
    python train.py --config=configs/adience_gender.py:paper --workdir=runs/adience_gender_paper  # paper recipe
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return fine_grained.get_config("adience_gender", 2, head_lr=0.1, width=2, gate_fn="softmax", output="all",
                                   bn_group_size=32,
                                   arg=arg)
