"""CIFAR-100 (TFDS cifar100), the authors' released run: WRN-40-10 with AD=3, AW=4, no
regulariser, 17.8% error (`:baseline`, `:baseline,wrn28`: their WRN-40-10 and WRN-28-10 baselines,
18.86% and 19.03%). configs/cifar.py lists the arguments.

python train.py --config=configs/cifar100.py --workdir=runs/cifar100
"""

from configs import cifar

get_config = cifar.for_dataset("cifar100")
