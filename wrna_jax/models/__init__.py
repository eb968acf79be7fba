"""Backbones, attention modules and the model factory."""

from wrna_jax.models.attention import (AttentionModule, AttentionSpec, diversity_regularizer,
                                       gated_combination, spatial_masks)
from wrna_jax.models.factory import PRESETS, create_backbone, create_model
from wrna_jax.models.network import AttentionNetwork
from wrna_jax.models.outputs import AttentionOutput, BackboneOutput, ModelOutput

__all__ = ["AttentionModule", "AttentionNetwork", "AttentionOutput", "AttentionSpec",
           "BackboneOutput", "ModelOutput", "PRESETS", "create_backbone", "create_model",
           "diversity_regularizer", "gated_combination", "spatial_masks"]
