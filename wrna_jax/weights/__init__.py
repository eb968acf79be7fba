"""Weights from PyTorch: pretrained backbones for fine-tuning and the authors' checkpoints.

files.py reads state dicts (.safetensors with numpy, .pth with torch), which
wrna_jax/models/state_dicts.py converts strictly (key names, layouts; each backbone's rules
live with it in wrna_jax/models),
pretrained.py stores a converted backbone and initialises training from it
(`config.init_from`), released.py imports the authors' attention networks.
`python -m wrna_jax.convert SRC DST` converts from the command line.

The names below load their module on first use, so importing the package costs nothing.
"""

import importlib
from typing import Any

_EXPORTS = {
    "load_state_dict": "files", "save_safetensors": "files",
    "WeightMismatchError": "wrna_jax.models.state_dicts",
    "apply_init_from": "pretrained", "check_init_from": "pretrained", "convert_backbone": "pretrained",
    "load_backbone": "pretrained", "save_backbone": "pretrained",
    "convert_released": "released", "load_released": "released", "released_config": "released",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _EXPORTS[name]
    return getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
