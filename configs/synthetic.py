"""A synthetic dataset shaped like Stanford Dogs (120 classes, 12,000 training images of sizes
around 500 x 375), generated with numpy: the dogs recipe with no data to download and no
TensorFlow, fed from the device (wrna_jax/data/synthetic.py). For benchmarks, tests and GPU
machines without data; it trains from scratch (no weights to fine-tune).

python train.py --config=configs/synthetic.py --workdir=runs/synthetic
"""

from configs import fine_grained

get_config = fine_grained.for_dataset("synthetic_dogs")
