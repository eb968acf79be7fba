"""Adience gender (manual download, folds --config.dataset.fold=0..4); paper 93.9 -> 94.8.

python train.py --config=configs/adience_gender.py --workdir=runs/adience_gender  (`:paper` for the paper's recipe)
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("adience_gender")
