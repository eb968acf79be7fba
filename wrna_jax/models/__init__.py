"""Backbones, attention modules and the model factory."""

from wrna_jax.models.attention import (AttentionSpec, PainlessModule, diversity_regularizer, gate_weights,
                                       gated_combination, spatial_masks)
from wrna_jax.models.factory import PRESETS, create_backbone, create_model, regularizer_weight
from wrna_jax.models.network import AttentionNetwork
from wrna_jax.models.outputs import AttentionOutput, BackboneOutput, ModelOutput
from wrna_jax.models.rectify import GateLayer, RectifyModule

__all__ = ["AttentionNetwork", "AttentionOutput", "AttentionSpec", "BackboneOutput", "GateLayer",
           "ModelOutput", "PainlessModule", "PRESETS", "RectifyModule", "create_backbone", "create_model",
           "diversity_regularizer", "gate_weights", "gated_combination", "regularizer_weight", "spatial_masks"]
