"""Shared recipe of cifar10.py and cifar100.py: the authors' released CIFAR runs (dev branch,
`logs/cifar*/*/log.json`), trained from scratch, each as the code that produced it ran
(docs/method.md, section 6).

Common to all: `attend_rectify` modules (AD=3, AW=4) with softmax gates and output 'all', SGD
momentum 0.9, weight decay 5e-4, lr 0.1 for everything, batch 128, lr x0.2 after epochs 60, 120
and 160, 200 epochs, BatchNorm statistics over the per-GPU slices of their 2-GPU runs (64 images).
The argument (comma-separated) picks the run:

* None: the attention runs of commit ea7d4af (CIFAR-10 WRN-28-10 3.45%, with 'wrn40' WRN-40-10
  3.46%; CIFAR-100 WRN-40-10 17.8%): their network of then (`model.layout='authors_ea7d4af'`),
  plain momentum, the regulariser on un-pooled masks.
* 'dropout': the run of commit 8c87096 (CIFAR-10 WRN-40-10, dropout 0.3: 3.14%), whose code is
  the branch tip's: `layout='authors'`, Nesterov momentum, the regulariser on 2x2-pooled masks.
* 'tip': the branch tip's recipe (288ec61) without dropout, as their repository runs today.
* 'baseline': their baselines (`train_cifar.py`): Zagoruyko's WRN without attention, plain
  momentum (CIFAR-10 WRN-28-10 3.90%, WRN-40-10 3.98%; CIFAR-100 19.03%, 18.86%: best epochs).
* 'wrn28' / 'wrn40': WRN-28-10 or WRN-40-10 instead of the run's depth.
* 'authors_protocol': select the best checkpoint on the test split, as the authors did; by default
  a validation split of 10% of each class is held out of train and test is evaluated once.
"""

from typing import Callable

import ml_collections

from configs import default

# The released attention runs: WRN-d-10, their logs' attention_width and reg_w.
DATASETS = {
    "cifar10": dict(depth=28, attention_width=4, regularizer_weight=1e-3),
    # Its folder says aw=2, but its log records attention_width 4 and reg_w 0: the log is what
    # the run was given, so this follows it.
    "cifar100": dict(depth=40, attention_width=4, regularizer_weight=0.0),
}
RECIPES = ("dropout", "tip", "baseline")
OPTIONS = (*RECIPES, "wrn28", "wrn40", "authors_protocol")


def for_dataset(dataset: str) -> Callable[[str | None], ml_collections.ConfigDict]:
    """The `get_config(arg)` of a dataset's config file (configs/cifar10.py, ...)."""
    return lambda arg=None: get_config(dataset, arg)


def get_config(dataset: str, arg: str | None) -> ml_collections.ConfigDict:
    """The config of `dataset`'s run picked by `arg` (the module docstring lists the options)."""
    settings = DATASETS[dataset]
    options = set(filter(None, (arg or "").split(",")))
    if options - set(OPTIONS):
        raise ValueError(f"Unknown config argument(s) {sorted(options - set(OPTIONS))}; use at most one of "
                         f"{', '.join(map(repr, RECIPES))}, at most one of 'wrn28', 'wrn40', and/or "
                         "'authors_protocol', comma-separated.")
    recipes, depths = options & set(RECIPES), options & {"wrn28", "wrn40"}
    if len(recipes) > 1 or len(depths) > 1:
        raise ValueError(f"Config argument {arg!r}: use at most one of {', '.join(map(repr, RECIPES))} "
                         "and at most one of 'wrn28', 'wrn40'.")
    recipe = next(iter(recipes), None)
    depth = {"wrn28": 28, "wrn40": 40}[depths.pop()] if depths else 40 if recipe == "dropout" else settings["depth"]
    config = default.get_config()
    if "authors_protocol" in options:
        config.dataset = default.dataset(dataset)  # its eval split is test
    else:
        config.dataset = default.dataset(dataset, validation=dict(
            protocol="holdout",
            fraction=0.1,             # of each class's training examples, held out for validation
            seed=0,                   # which ones
        ))
    config.evals = ml_collections.ConfigDict(dict(attention_masks=dict(examples=8), per_class=dict(most_confused=10)))
    # bfloat16 compute, for GPUs (parameters, BatchNorm statistics and the loss stay float32);
    # --config.model.dtype=float32 for exact float32 training, e.g. on a CPU.
    config.model.update(backbone="cifar_wrn", depth=depth, width=10, dtype="bfloat16", bn_group_size=64,
                        layout={None: "authors_ea7d4af", "baseline": "zagoruyko"}.get(recipe, "authors"),
                        dropout=0.3 if recipe == "dropout" else 0.0)
    config.attention.update(preset="attend_rectify", depth=0 if recipe == "baseline" else 3,
                            width=settings["attention_width"], gate_fn="softmax", output="all",
                            regularizer_weight=settings["regularizer_weight"])
    if recipe is None:
        config.attention.regularizer_pool = 1
    config.optimizer.update(learning_rate=0.1, head_lr_multiplier=1.0, momentum=0.9,
                            nesterov=recipe in ("dropout", "tip"), weight_decay=5e-4)
    config.schedule.update(kind="steps", boundaries_epochs=(60, 120, 160), factor=0.2)
    config.batch_size = 128
    config.num_epochs = 200
    return config
