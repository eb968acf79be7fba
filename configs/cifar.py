"""Shared recipe of cifar10.py and cifar100.py: the authors' released CIFAR runs (dev branch,
`logs/cifar*_painless/*/log.json`), trained from scratch (docs/method.md).

Their attention WRN-d-k (`layout='authors'`) with `attend_rectify` modules (AD=3) on the final
output and the pre-activated inputs of groups 3 and 2, softmax gates, output 'all'; SGD Nesterov
0.9, weight decay 5e-4, lr 0.1 for everything, batch 128, lr x0.2 after epochs 60, 120 and 160,
200 epochs; BatchNorm statistics over the per-GPU slices of their 2-GPU runs (64 images).
"""

import ml_collections

from typing import Callable

from configs import default

# The released runs: WRN-d-k, their logs' attention_width and reg_w.
DATASETS = {
    "cifar10": dict(depth=28, width=10, attention_width=4, regularizer_weight=1e-3),
    # Its folder says aw=2, but its log records attention_width 4 and reg_w 0: the log is what
    # the run was given, so this follows it.
    "cifar100": dict(depth=40, width=10, attention_width=4, regularizer_weight=0.0),
}


def for_dataset(dataset: str) -> Callable[[str | None], ml_collections.ConfigDict]:
    """The `get_config(arg)` of a dataset's config file (configs/cifar10.py, ...)."""
    return lambda arg=None: get_config(dataset, arg)


def get_config(dataset: str, arg: str | None) -> ml_collections.ConfigDict:
    """`arg`: None (attention), 'baseline' (AD=0: the same network without attention) and/or
    'dropout' (0.3), comma-separated."""
    settings = DATASETS[dataset]
    options = set(filter(None, (arg or "").split(",")))
    if options - {"baseline", "dropout"}:
        raise ValueError(f"Unknown config argument(s) {sorted(options - {'baseline', 'dropout'})}; "
                         "use 'baseline', 'dropout' or both, comma-separated.")
    config = default.get_config()
    config.dataset = default.dataset(dataset)
    config.evals = ml_collections.ConfigDict(dict(attention_masks=dict(examples=8), per_class=dict(most_confused=10)))
    # bfloat16 compute, for GPUs (parameters, BatchNorm statistics and the loss stay float32);
    # --config.model.dtype=float32 for exact float32 training, e.g. on a CPU.
    config.model.update(backbone="cifar_wrn", depth=settings["depth"], width=settings["width"],
                        dtype="bfloat16", layout="authors", bn_group_size=64,
                        dropout=0.3 if "dropout" in options else 0.0)
    config.attention.update(preset="attend_rectify", depth=0 if "baseline" in options else 3,
                            width=settings["attention_width"], gate_fn="softmax", output="all",
                            regularizer_weight=settings["regularizer_weight"])
    config.optimizer.update(learning_rate=0.1, head_lr_multiplier=1.0, momentum=0.9, nesterov=True,
                            weight_decay=5e-4)
    config.schedule.update(kind="steps", boundaries_epochs=(60, 120, 160), factor=0.2)
    config.batch_size = 128
    config.num_epochs = 200
    return config
