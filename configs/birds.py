"""CUB-200-2011 (TFDS caltech_birds2011); released run 83.6%, paper 81.0 -> 82.0.

python train.py --config=configs/birds.py --workdir=runs/birds  (`:paper` for the paper's recipe)
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("caltech_birds2011")
