"""Backbones, attention modules and the model factory.

Importing the package imports every module in it, so each backbone file registers itself
(models/registry.py).
"""

import importlib
import pkgutil

from wrna_jax.models.attention import (AttentionSpec, PainlessModule, diversity_regularizer, gate_weights,
                                       gated_combination, spatial_masks)
from wrna_jax.models.factory import PRESETS, create_backbone, create_model, regularizer_weight
from wrna_jax.models.network import AttentionNetwork
from wrna_jax.models.outputs import AttentionOutput, BackboneOutput, ModelOutput
from wrna_jax.models.rectify import GateLayer, RectifyModule
from wrna_jax.models.registry import BACKBONES, Backbone, PretrainedWeights, backbone_entry, register_backbone

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AttentionNetwork", "AttentionOutput", "AttentionSpec", "BACKBONES", "Backbone", "BackboneOutput",
           "GateLayer", "ModelOutput", "PainlessModule", "PRESETS", "PretrainedWeights", "RectifyModule",
           "backbone_entry", "create_backbone", "create_model", "diversity_regularizer", "gate_weights",
           "gated_combination", "regularizer_weight", "register_backbone", "spatial_masks"]
