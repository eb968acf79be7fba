"""Stanford Cars (TFDS cars196); released run 89.6%, paper 87.8 -> 90.0.

python train.py --config=configs/cars.py --workdir=runs/cars  (`:paper` for the paper's recipe)
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("cars196")
