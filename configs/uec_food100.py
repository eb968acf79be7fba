"""UEC Food-100 (manual download, folds --config.dataset.fold=0..4); released run 85.9%, paper 84.3 -> 85.5.

python train.py --config=configs/uec_food100.py --workdir=runs/uec_food100  (`:paper` for the paper's recipe)
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("uec_food100")
