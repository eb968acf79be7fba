"""Stanford Cars (TFDS cars196); released run 89.6%, paper 87.8 -> 90.0.

python train.py --config=configs/cars.py --workdir=runs/cars  (`:paper` for the paper's recipe)

TFDS cannot download cars196 any more (404); `:manual` (or `:manual,paper`) reads the official
devkit files from config.dataset.manual_dir instead (wrna_jax/data/stanford_cars.py).
"""

import ml_collections

from configs import fine_grained


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: 'manual' and/or the arguments of `fine_grained.get_config`, comma-separated."""
    options = [option for option in (arg or "").split(",") if option]
    rest = ",".join(option for option in options if option != "manual") or None
    return fine_grained.get_config("stanford_cars" if "manual" in options else "cars196", rest)
