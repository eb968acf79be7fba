"""Adience age groups (manual download, folds --config.dataset.fold=0..4); paper 58.6 -> 59.7.

python train.py --config=configs/adience_age.py --workdir=runs/adience_age  (`:paper` for the paper's recipe)
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("adience_age")
