"""Cluttered Translated MNIST (paper 4.1), generated locally: the embedded default.

    python train.py --config=configs/cluttered_mnist.py --workdir=runs/cmnist
    python train.py --config=configs/cluttered_mnist.py:baseline --workdir=runs/cmnist_base

The default budget fits a 2-core CPU in a few minutes: the paper's recipe (SGD 0.1, /10 after
epoch 60, 200 epochs on 200k images) is `:paper_recipe`; `:paper_data` builds the canvases as the
authors did, from the full MNIST (set --config.dataset.cluttered_mnist.mnist_dir to the directory
of the four standard files); `:paper_data,paper_recipe` is the paper's whole setting.
"""

import ml_collections

from configs import default

PAPER_SPLIT_SIZES = dict(num_train=200_000, num_validation=100_000, num_test=100_000)  # paper 4.1


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: None (attention, AD=4, AW=2), or any of 'baseline' (AD=0), 'paper_recipe' and
    'paper_data', comma-separated."""
    config = default.get_config()
    options = set(filter(None, (arg or "").split(",")))
    unknown = options - {"baseline", "paper_recipe", "paper_data"}
    if unknown:
        raise ValueError(f"Unknown config argument(s) {sorted(unknown)}; use 'baseline', "
                         "'paper_recipe', 'paper_data', comma-separated.")
    config.num_epochs = 2
    config.schedule.kind = "steps"
    config.schedule.boundaries_epochs = (1.5,)
    # The master branch's train_mnist.py: SGD lr 0.1 for every parameter, plain momentum 0.9
    # (no Nesterov), weight decay 1e-5, batch 100.
    config.optimizer.update(learning_rate=0.1, head_lr_multiplier=1.0, momentum=0.9, nesterov=False,
                            weight_decay=1e-5)
    config.batch_size = 100
    if "paper_recipe" in options:
        config.dataset.cluttered_mnist.update(PAPER_SPLIT_SIZES)
        config.num_epochs = 200
        config.schedule.boundaries_epochs = (60,)
    if "paper_data" in options:
        config.dataset.cluttered_mnist.update(source="mnist_files", composition="authors", **PAPER_SPLIT_SIZES)
    if "baseline" in options:
        config.attention.depth = 0
    return config
