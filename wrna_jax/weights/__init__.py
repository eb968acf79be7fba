"""Weights from PyTorch: pretrained backbones for fine-tuning and the authors' checkpoints.

files.py reads state dicts (.safetensors with numpy, .pth with torch), mapping.py converts them
strictly (key names, layouts; the backbones' own rules live with them in wrna_jax/models),
pretrained.py stores a converted backbone and initialises training from it
(`config.init_from`), released.py imports the authors' attention networks.
`python -m wrna_jax.convert SRC DST` converts from the command line.

The names below load their module on first use: the backbones import `mapping` while this
package's `pretrained` imports the backbones.
"""

import importlib
from typing import Any

_EXPORTS = {
    "load_state_dict": "files", "save_safetensors": "files",
    "WeightMismatchError": "mapping",
    "apply_init_from": "pretrained", "check_init_from": "pretrained", "convert_backbone": "pretrained",
    "load_backbone": "pretrained", "save_backbone": "pretrained",
    "convert_released": "released", "load_released": "released", "released_config": "released",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
