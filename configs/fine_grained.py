"""Shared recipe of the fine-grained configs (dogs.py, birds.py, ...): WRN-50-2 + attention.

`released` (default) reproduces the authors' released fine-grained runs as their code ran then
(dev branch, commit 0b671d5: `train_resnet.py` and `logs/fine_grained/*.json`; docs/method.md):
the `attend_rectify` modules on layer3, layer2, layer1 (AD=3) with the dataset's AW, gate
normalisation and output rule, SGD Nesterov 0.9, weight decay 1e-4, batch 128, backbone lr =
0.1 x head lr (modules, gate layer and classifier at the head lr), lr x0.1 after epochs 40 and
80, 100 epochs, no early stop, regulariser 1e-3 on the full (un-pooled) masks, and BatchNorm
statistics over the per-GPU slices their DataParallel runs had (32 images; 16 for birds, trained
on 8 GPUs). `tip` is the same recipe as the branch's last commit (288ec61) runs it: the
regulariser on 2x2-pooled masks. `paper` is the paper's recipe (section 4.2): the `paper`
module, AD=2, AW=2, batch 64, backbone lr 1e-3 and 10x on attention and classifier,
halved every 30 epochs, 100 epochs, stop on a plateau (20 epochs without improvement).

Both fine-tune torchvision's ImageNet WRN-50-2, `config.init_from` by name: downloaded once into
~/.cache/wrna_jax, verified and converted (wrna_jax/weights/hub.py); `...IMAGENET1K_V2` and the
ResNet-50 names work too, or a path (--config.init_from=PATH: a converted directory, .pth or
.safetensors).
"""

from typing import Callable

import ml_collections

from configs import default

RECIPES = ("released", "tip", "paper")
# The released runs (their logs' lr, attention_width, attention_type, attention_output, and
# batch 128 / ngpu -> BatchNorm group) and our choice for the datasets without one (Food-101,
# Adience: head lr 0.1 and AW 2 as for birds, with softmax gates); extra dataset fields last.
DATASETS = {
    "stanford_dogs": dict(head_lr=0.005, width=2, gate_fn="softmax", output="all", bn_group_size=32),
    "caltech_birds2011": dict(head_lr=0.1, width=2, gate_fn="sigmoid", output="50", bn_group_size=16),
    "cars196": dict(head_lr=0.2, width=4, gate_fn="softmax", output="all", bn_group_size=32),
    "uec_food100": dict(head_lr=0.2, width=2, gate_fn="softmax", output="all", bn_group_size=32, fold=0),
    "food101": dict(head_lr=0.1, width=2, gate_fn="softmax", output="all", bn_group_size=32,
                    cache=False),  # decoded_cache holds the ~5 GB of JPEGs (not ~20 GB decoded), decodes each read
    "adience_age": dict(head_lr=0.1, width=2, gate_fn="softmax", output="all", bn_group_size=32, fold=0),
    "adience_gender": dict(head_lr=0.1, width=2, gate_fn="softmax", output="all", bn_group_size=32, fold=0),
}
DATASETS["stanford_cars"] = DATASETS["cars196"]  # the same dataset, built from the devkit files
# Generated with numpy, Stanford Dogs' shape and recipe (wrna_jax/data/synthetic.py); no weights to fine-tune.
DATASETS["synthetic_dogs"] = dict(DATASETS["stanford_dogs"], init_from=None, synthetic=dict(
    num_classes=120, num_train=12_000, num_test=8_580, seed=0))
# torchvision's ImageNet WRN-50-2 (the paper used the original WRN-50-2).
DEFAULT_INIT_FROM = "torchvision:wide_resnet50_2.IMAGENET1K_V1"


def for_dataset(dataset: str) -> Callable[[str | None], ml_collections.ConfigDict]:
    """The `get_config(arg)` of a dataset's config file (configs/dogs.py, ...)."""
    return lambda arg=None: get_config(dataset, arg)


def get_config(dataset: str, arg: str | None) -> ml_collections.ConfigDict:
    """The config for `dataset`; `arg` (the config file's argument) is the recipe, None/'released',
    'tip' or 'paper', and/or 'authors_protocol', comma-separated (e.g. configs/dogs.py:paper,authors_protocol).

    Model selection: by default the best checkpoint and early stopping use a validation split held
    out of train (10% of each class, wrna_jax/data/holdout.py) and eval.py evaluates test once;
    'authors_protocol' selects on the test split as the authors' logs did (their "validation"
    was the test split), to compare with their numbers."""
    settings = dict(DATASETS[dataset])
    head_lr, width, gate_fn, output, bn_group_size = (settings.pop(key) for key in (
        "head_lr", "width", "gate_fn", "output", "bn_group_size"))
    init_from = settings.pop("init_from", DEFAULT_INIT_FROM)
    options = [option for option in (arg or "").split(",") if option]
    recipes = [option for option in options if option != "authors_protocol"]
    recipe = recipes[0] if len(recipes) == 1 else "released" if not recipes else None
    if recipe not in RECIPES:
        raise ValueError(f"Unknown config argument {arg!r}: use one recipe of {', '.join(map(repr, RECIPES))} "
                         "and/or 'authors_protocol', comma-separated (e.g. --config=configs/dogs.py:paper).")
    config = default.get_config()
    config.dataset = default.dataset(dataset, **settings, validation=dict(
        protocol="authors" if "authors_protocol" in options else "holdout",
        fraction=0.1,             # of each class's training examples, held out for validation
        seed=0,                   # which ones
    ), images=dict(
        image_size=224,           # random (train) or centre (eval) crop side
        resize_size=256,          # shorter side before cropping
        crop_to_bbox=False,       # crop to the dataset's bounding box first
        ten_crop=False,           # eval.py: average the log-probabilities of ten crops
        antialias=False,          # antialiased resizing (matches PIL, about 2x slower)
        decoded_cache=False,      # cache decoded 256-pixel uint8 images: epochs only crop, flip, normalise
        max_aspect_ratio=1.5,     # device feed: longer side kept up to 1.5 x resize_size (wrna_jax/data/arrays.py)
    ))
    config.evals = ml_collections.ConfigDict(dict(attention_masks=dict(examples=8), per_class=dict(most_confused=10)))
    # bfloat16 compute, for GPUs (parameters, BatchNorm statistics and the loss stay float32);
    # --config.model.dtype=float32 for exact float32 training, e.g. on a CPU.
    config.model.update(backbone="imagenet_resnet", depth=50, width=2, dtype="bfloat16")
    config.optimizer.update(momentum=0.9, nesterov=True, weight_decay=1e-4, head_lr_multiplier=10.0)
    config.num_epochs = 100
    config.eval_batch_size = 128
    config.log_every_steps = 20
    config.eval_every_epochs = 1
    config.init_from = init_from
    if recipe in ("released", "tip"):
        config.attention.update(preset="attend_rectify", depth=3, width=width, gate_fn=gate_fn, output=output)
        if recipe == "released":
            config.attention.regularizer_pool = 1
        config.model.bn_group_size = bn_group_size
        config.batch_size = 128
        config.optimizer.learning_rate = round(0.1 * head_lr, 12)
        config.schedule.update(kind="steps", boundaries_epochs=(40, 80), factor=0.1)
        config.early_stop_patience = 0
    else:
        config.attention.update(preset="paper", depth=2, width=2)
        config.batch_size = 64
        config.optimizer.learning_rate = 1e-3
        config.schedule.update(kind="every", every_epochs=30, factor=0.5)
        config.early_stop_patience = 20
    return config
