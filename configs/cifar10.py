"""CIFAR-10 (TFDS cifar10), WRN-28-10 with AD=3, AW=4; released error 3.45% (WRN-40-10: 3.46%, 3.14% with dropout).

python train.py --config=configs/cifar10.py --workdir=runs/cifar10  (`:baseline` and/or `:dropout`)
"""

from configs import cifar

get_config = cifar.for_dataset("cifar10")
