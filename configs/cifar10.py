"""CIFAR-10 (TFDS cifar10), WRN-28-10 with AD=3, AW=4; released error 3.45%.

    python train.py --config=configs/cifar10.py --workdir=runs/cifar10
    python train.py --config=configs/cifar10.py:baseline,dropout --workdir=runs/cifar10_base
"""

import ml_collections

from configs import cifar


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return cifar.get_config("cifar10", 10, depth=28, width=10, attention_width=4, regularizer_weight=1e-3, arg=arg)
