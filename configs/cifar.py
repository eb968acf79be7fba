"""Shared recipe of cifar10.py and cifar100.py: the authors' released CIFAR runs (dev branch,
`logs/cifar*_painless/*/log.json`), trained from scratch (docs/method.md).

Their attention WRN-d-k (`layout='authors'`) with `attend_rectify` modules (AD=3) on the final
output and the pre-activated inputs of groups 3 and 2, softmax gates, output 'all'; SGD Nesterov
0.9, weight decay 5e-4, lr 0.1 for everything, batch 128, lr x0.2 after epochs 60, 120 and 160,
200 epochs; BatchNorm statistics over the per-GPU slices of their 2-GPU runs (64 images).
"""

import ml_collections

from configs import default


def get_config(dataset: str, num_classes: int, *, depth: int, width: int, attention_width: int,
               regularizer_weight: float, arg: str | None) -> ml_collections.ConfigDict:
    """`arg`: None (attention), 'baseline' (AD=0) and/or 'dropout' (0.3), comma-separated.
    attention_width and regularizer_weight are the released log's attention_width and reg_w."""
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
                        dtype="bfloat16", layout="authors", bn_group_size=64,
                        dropout=0.3 if "dropout" in options else 0.0)
    config.attention.update(preset="attend_rectify", depth=0 if "baseline" in options else 3,
                            width=attention_width, gate_fn="softmax", output="all",
                            regularizer_weight=regularizer_weight)
    config.optimizer.update(learning_rate=0.1, head_lr_multiplier=1.0, momentum=0.9, nesterov=True,
                            weight_decay=5e-4)
    config.schedule.update(kind="steps", boundaries_epochs=(60, 120, 160), factor=0.2)
    config.batch_size = 128
    config.num_epochs = 200
    return config
