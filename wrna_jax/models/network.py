"""A backbone wrapped with attention modules at its named feature maps (WRNA).

The backbone's classifier is one more hypothesis (the first). Two families of modules
(docs/method.md):

* 'painless' (paper, master branch): every module gives K hypotheses, each with a confidence;
  with the backbone's own confidence (`BackboneGate`) they are normalised together into gates
  that weight the log-probabilities (Eq. 9).
* 'rectify' (dev branch): every module gives one hypothesis; one `GateLayer` on the backbone's
  pooled features gives a confidence per module (and the backbone's, with output 'all'); with
  output '50' the gated module output is averaged with the backbone's log-probabilities.

A module at one of the backbone's `own_bn_points` reads its map through a BatchNorm-ReLU of its
own (`pre_bn_<point>`). Without gates the hypotheses are averaged (with '50': the modules' mean,
then averaged with the backbone). Depth 0 gives the plain backbone.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.attention import (AttentionSpec, BackboneGate, PainlessModule, diversity_regularizer,
                                       gate_weights, gated_combination)
from wrna_jax.models.layers import batch_norm
from wrna_jax.models.outputs import ModelOutput
from wrna_jax.models.rectify import GateLayer, RectifyModule

MODULE_CLASSES = {"painless": PainlessModule, "rectify": RectifyModule}


def attach_points(backbone: Any, spec: AttentionSpec) -> tuple[str, ...]:
    """The feature maps the spec's modules read, deepest first (the first `spec.depth`)."""
    schemes = backbone.attach_points
    return tuple(schemes.get(spec.attach, schemes["deepest"]))


class AttentionNetwork(nn.Module):
    """`backbone` plus `spec.depth` attention modules at its attach points."""

    backbone: nn.Module
    spec: AttentionSpec
    num_classes: int
    dtype: Any = jnp.float32
    bn_scale_init: str = "ones"  # how training starts its BatchNorm scales (layers.BN_SCALE_INITS)

    @property
    def attached(self) -> tuple[str, ...]:
        """The feature maps that carry a module."""
        return attach_points(self.backbone, self.spec)[: self.spec.depth]

    @property
    def hypothesis_names(self) -> tuple[str, ...]:
        """Names along ModelOutput.hypotheses: 'backbone', then '<attach point>/head<k>'
        (painless) or '<attach point>' (rectify)."""
        if self.spec.module == "rectify":
            return ("backbone",) + self.attached
        return ("backbone",) + tuple(f"{p}/head{k}" for p in self.attached for k in range(self.spec.width))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> ModelOutput:
        spec = self.spec
        out = self.backbone(x, train=train)
        module = MODULE_CLASSES[spec.module]
        hypotheses = [out.logits.astype(jnp.float32)[:, None]]
        confidences, masks = [], {}
        own_bn = getattr(self.backbone, "own_bn_points", ())
        for point in self.attached:
            z = out.features[point]
            if point in own_bn:
                z = nn.relu(batch_norm(train, self.dtype, f"pre_bn_{point}", group_size=spec.bn_group_size)(z))
            att = module(spec, self.num_classes, self.dtype, name=f"att_{point}")(z, train)
            hypotheses.append(att.logits)
            confidences.append(att.confidences)
            masks[point] = att.masks
        hypotheses = jnp.concatenate(hypotheses, axis=1)
        gates = self._gates(out.pooled, confidences, hypotheses.shape, train)
        log_probs = gated_combination(hypotheses, gates)
        regularizer = diversity_regularizer(list(masks.values()), spec.regularizer_norm, spec.regularizer_pool)
        return ModelOutput(log_probs=log_probs, hypotheses=hypotheses, gates=gates, masks=masks,
                           regularizer=regularizer, hypothesis_names=self.hypothesis_names)

    def _gates(self, pooled: jax.Array, confidences: list, shape: tuple[int, ...], train: bool) -> jax.Array:
        """(B, hypotheses) weights of the log-probabilities, summing to 1."""
        spec = self.spec
        batch, count = shape[:2]
        uniform = lambda n: jnp.full((batch, n), 1.0 / n, jnp.float32)
        if not spec.depth:
            return uniform(1)
        half = spec.output == "50"  # the backbone keeps weight 1/2, the modules share the other
        if not spec.gates:
            weights = uniform(count - 1) if half else uniform(count)
        elif spec.module == "rectify":
            gate = GateLayer(count - 1 if half else count, spec.gate_bn, spec.bn_group_size,
                             name="output_gate")(pooled, train)
            weights = gate_weights(gate, spec.gate_fn)
        else:
            net = BackboneGate(spec.gate_bn, spec.bn_group_size, name="output_gate")(pooled, train)
            weights = gate_weights(jnp.concatenate([net, *confidences], axis=1), spec.gate_fn)
        if half:
            weights = jnp.concatenate([jnp.full((batch, 1), 0.5, jnp.float32), 0.5 * weights], axis=1)
        return weights
