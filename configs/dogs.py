"""Stanford Dogs (TFDS stanford_dogs); released run 92.89%, paper WRN 89.6 -> WRNA 89.9.

python train.py --config=configs/dogs.py --workdir=runs/dogs  (`:paper` for the paper's recipe)
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("stanford_dogs")
