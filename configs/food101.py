"""Food-101 (TFDS food101; no released run: settings in configs/fine_grained.py).

python train.py --config=configs/food101.py --workdir=runs/food101  (`:paper` for the paper's recipe)
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("food101")
