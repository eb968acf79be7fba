"""CIFAR-100 (TFDS cifar100), WRN-40-10 with AD=3, AW=2; released error 17.8%.

    python train.py --config=configs/cifar100.py --workdir=runs/cifar100
"""

import ml_collections

from configs import cifar


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return cifar.get_config("cifar100", 100, depth=40, width=10, attention_width=2, arg=arg)
