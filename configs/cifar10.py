"""CIFAR-10 (TFDS cifar10), the authors' released runs: WRN-28-10 with AD=3, AW=4, 3.45% error
(`:wrn40`: WRN-40-10, 3.46%; `:dropout`: WRN-40-10 with dropout 0.3, 3.14%; `:baseline`,
`:baseline,wrn40`: their WRN baselines, 3.90% and 3.98%). configs/cifar.py lists the arguments.

python train.py --config=configs/cifar10.py --workdir=runs/cifar10
"""

from configs import cifar

get_config = cifar.for_dataset("cifar10")
