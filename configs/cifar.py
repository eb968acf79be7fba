"""Shared recipe of cifar10.py and cifar100.py: the released CIFAR recipe, trained from scratch.

SGD Nesterov 0.9, weight decay 5e-4, lr 0.1 (same for backbone and heads), batch 128, lr x0.2
at epochs 60, 120 and 160, 200 epochs; pre-activation WRN-d-k with AD=3 (SPEC sections 2, 4).
"""

import ml_collections

from configs import default


def get_config(dataset: str, num_classes: int, *, depth: int, width: int, attention_width: int,
               arg: str | None) -> ml_collections.ConfigDict:
    """`arg`: None (attention), 'baseline' (AD=0) and/or 'dropout' (0.3), comma-separated."""
    options = set(filter(None, (arg or "").split(",")))
    if options - {"baseline", "dropout"}:
        raise ValueError(f"Unknown config argument(s) {sorted(options - {'baseline', 'dropout'})}; "
                         "use 'baseline', 'dropout' or both, comma-separated.")
    config = default.get_config()
    config.dataset.update(name=dataset, train_split="train", eval_split="test", test_split="test",
                          sweep_distractors=())
    # bfloat16 compute, for GPUs (parameters, BatchNorm statistics and the loss stay float32);
    # --config.model.dtype=float32 for exact float32 training, e.g. on a CPU.
    config.model.update(backbone="cifar_wrn", depth=depth, width=width, num_classes=num_classes,
                        dtype="bfloat16",
                        dropout=0.3 if "dropout" in options else 0.0)
    config.attention.update(preset="released", depth=0 if "baseline" in options else 3,
                            width=attention_width)
    config.optimizer.update(learning_rate=0.1, head_lr_multiplier=1.0, momentum=0.9, nesterov=True,
                            weight_decay=5e-4)
    config.schedule.update(kind="steps", boundaries_epochs=(60, 120, 160), factor=0.2)
    config.batch_size = 128
    config.num_epochs = 200
    return config
