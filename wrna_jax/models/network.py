"""A backbone wrapped with attention modules at its named feature maps (WRNA)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.attention import (AttentionModule, AttentionSpec, BackboneGate,
                                       diversity_regularizer, gated_combination)
from wrna_jax.models.outputs import ModelOutput


class AttentionNetwork(nn.Module):
    """`backbone` plus `spec.depth` attention modules at its deepest attach points.

    The backbone's classifier is one more hypothesis; with gates, all confidences (the
    backbone's first) are normalised by one softmax and weight the log-probabilities (Eq. 9);
    without gates the hypotheses are averaged. Depth 0 gives the plain backbone.
    """

    backbone: nn.Module
    spec: AttentionSpec
    num_classes: int
    dtype: Any = jnp.float32

    @property
    def hypothesis_names(self) -> tuple[str, ...]:
        """Names along ModelOutput.hypotheses: 'backbone', then '<attach point>/head<k>'."""
        points = self.backbone.attach_points[: self.spec.depth]
        return ("backbone",) + tuple(f"{p}/head{k}" for p in points for k in range(self.spec.width))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
        out = self.backbone(x, train=train)
        hypotheses = [out.logits.astype(jnp.float32)[:, None]]
        confidences, masks = [], {}
        for point in self.backbone.attach_points[: self.spec.depth]:
            att = AttentionModule(self.spec, self.num_classes, self.dtype, name=f"att_{point}")(
                out.features[point], train)
            hypotheses.append(att.logits)
            confidences.append(att.confidences)
            masks[point] = att.masks
        hypotheses = jnp.concatenate(hypotheses, axis=1)
        batch, count = hypotheses.shape[:2]

        if self.spec.depth and self.spec.gates:
            net_confidence = BackboneGate(self.spec.gate_bn, self.dtype, name="output_gate")(
                out.pooled, train)
            gates = jax.nn.softmax(jnp.concatenate([net_confidence, *confidences], axis=1), -1)
            log_probs = gated_combination(hypotheses, gates)
        else:
            gates = jnp.full((batch, count), 1.0 / count, jnp.float32)
            log_probs = gated_combination(hypotheses, None)
        regularizer = diversity_regularizer(list(masks.values()), self.spec.regularizer_norm)
        return ModelOutput(log_probs=log_probs, hypotheses=hypotheses, gates=gates, masks=masks,
                           regularizer=regularizer, hypothesis_names=self.hypothesis_names)
