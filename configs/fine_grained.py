"""Shared recipe of the fine-grained configs (dogs.py, birds.py, ...): WRN-50-2 + attention.

`released` (default) is the authors' released recipe (SPEC section 4): SGD Nesterov 0.9, weight
decay 1e-4, batch 128, backbone lr = 0.1 x head lr, lr x0.1 at epochs 40 and 80, 100 epochs,
stop after 20 epochs without improvement, regulariser 1e-3, AD=3 with the dataset's AW and
mask function. `paper` is the paper's (section 4.2): AD=2, AW=2, batch 64, backbone lr 1e-3
and 10x on attention and classifier, halved every 30 epochs, 100 epochs, stop on plateau.

Both fine-tune torchvision's ImageNet WRN-50-2 from `config.init_from`
(wrna_jax.weights.DEFAULT_INIT_FROM by default). Create it once:
    wget https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth
    python -m wrna_jax.convert wide_resnet50_2-95faca4d.pth ~/.cache/wrna_jax/wide_resnet50_2_imagenet1k_v1
or point init_from elsewhere (--config.init_from=PATH).
"""

import ml_collections

from configs import default
from wrna_jax.weights.pretrained import DEFAULT_INIT_FROM

RECIPES = ("released", "paper")


def get_config(dataset: str, num_classes: int, *, head_lr: float, width: int, mask_fn: str,
               arg: str | None, eval_split: str = "test", test_split: str = "test") -> ml_collections.ConfigDict:
    """The config for `dataset`; `arg` is None/'released' or 'paper' (the config file's argument)."""
    recipe = arg or "released"
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; use one of {', '.join(map(repr, RECIPES))} "
                         "(e.g. --config=configs/dogs.py:paper).")
    config = default.get_config()
    config.dataset.update(name=dataset, train_split="train", eval_split=eval_split,
                          test_split=test_split, sweep_distractors=())
    # bfloat16 compute, for GPUs (parameters, BatchNorm statistics and the loss stay float32);
    # --config.model.dtype=float32 for exact float32 training, e.g. on a CPU.
    config.model.update(backbone="imagenet_resnet", depth=50, width=2, num_classes=num_classes,
                        dtype="bfloat16")
    config.optimizer.update(momentum=0.9, nesterov=True, weight_decay=1e-4, head_lr_multiplier=10.0)
    config.num_epochs = 100
    config.eval_batch_size = 128
    config.log_every_steps = 20
    config.eval_every_epochs = 1
    config.early_stop_patience = 20
    config.init_from = DEFAULT_INIT_FROM
    if recipe == "released":
        config.attention.update(preset="released", depth=3, width=width, mask_fn=mask_fn,
                                regularizer_weight=1e-3)
        config.batch_size = 128
        config.optimizer.learning_rate = round(0.1 * head_lr, 12)
        config.schedule.update(kind="steps", boundaries_epochs=(40, 80), factor=0.1)
    else:
        config.attention.update(preset="paper", depth=2, width=2)
        config.batch_size = 64
        config.optimizer.learning_rate = 1e-3
        config.schedule.update(kind="every", every_epochs=30, factor=0.5)
    return config
