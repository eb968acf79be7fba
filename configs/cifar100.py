"""CIFAR-100 (TFDS cifar100), WRN-40-10 with AD=3, AW=4, no regulariser; released error 17.8%.

python train.py --config=configs/cifar100.py --workdir=runs/cifar100  (`:baseline` and/or `:dropout`)
"""

from configs import cifar

get_config = cifar.for_dataset("cifar100")
