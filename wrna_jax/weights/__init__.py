"""Weights from PyTorch: ImageNet ResNets for fine-tuning and the authors' released checkpoints.

files.py reads state dicts (.safetensors with numpy, .pth with torch), mapping.py converts
them strictly (key names, layouts), pretrained.py stores a converted ImageNet backbone and
initialises training from it (`config.init_from`), released.py imports the released code's
attention networks. `python -m wrna_jax.convert SRC DST` converts from the command line.
"""

from wrna_jax.weights.files import load_state_dict, save_safetensors
from wrna_jax.weights.mapping import WeightMismatchError
from wrna_jax.weights.pretrained import (TORCHVISION_URL, BackboneInfo, apply_init_from,
                                         check_init_from, convert_resnet, load_backbone, save_backbone)
from wrna_jax.weights.released import convert_released, load_released, released_config

__all__ = ["load_state_dict", "save_safetensors", "WeightMismatchError",
           "TORCHVISION_URL", "BackboneInfo", "apply_init_from", "check_init_from", "convert_resnet",
           "load_backbone", "save_backbone", "convert_released", "load_released", "released_config"]
