"""The attention module of the authors' dev branch ("attend and rectify", commit 288ec61): the
model behind their released fine-grained and CIFAR results (docs/method.md, section 3).

On a feature map Z (C channels) with K heads and N classes, three bias-free 3x3 convolutions
give the mask logits (K), per-position class logits O (K*N, head-major) and per-position scores
S (K). Each head's mask M_k is a spatial softmax; its hypothesis is the attention-weighted sum of
its logits, o_k = sum_p M_k(p) O_k(p), and its score s_k = sum_p M_k(p) S_k(p). The module's one
hypothesis is sum_k softmax_k(tanh(s))_k o_k (logits). No channel reduction, no BatchNorm.

`GateLayer` is the one gate layer for all hypotheses: tanh(BN(dense(pooled features))), one
confidence per gated hypothesis.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.attention import AttentionSpec, spatial_masks
from wrna_jax.models.layers import batch_norm, conv, kaiming_normal
from wrna_jax.models.outputs import AttentionOutput

# The dtype of the masks' weighted sums over the positions (their inputs: the masks and the
# per-position logits and scores). None: the compute dtype, which benchmarks/model_cost.py times
# against float32.
SUMS_DTYPE: Any = jnp.float32


class RectifyModule(nn.Module):
    """K self-attended heads combined into one hypothesis (dev branch)."""

    spec: AttentionSpec
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> AttentionOutput:
        del train  # no BatchNorm, no dropout
        k, n, kernel = self.spec.width, self.num_classes, self.spec.mask_kernel
        b, h, w, _ = z.shape
        layer = lambda features, name: conv(features, kernel, 1, kernel // 2, kernel_init=kaiming_normal,
                                            dtype=self.dtype, name=name)(z)
        masks = spatial_masks(layer(k, "mask_conv"), self.spec.mask_fn)            # (B, H, W, K)
        logits = layer(k * n, "output_conv").reshape(b, h, w, k, n)                # head-major channels
        scores = layer(k, "score_conv")
        # The convolutions run in the compute dtype; the masks, the weighted sums over the H*W
        # positions (SUMS_DTYPE) and everything after them are float32.
        sums = SUMS_DTYPE or self.dtype
        head_logits = jnp.einsum("bhwk,bhwkn->bkn", masks.astype(sums), logits.astype(sums),
                                 preferred_element_type=jnp.float32)
        head_scores = jnp.einsum("bhwk,bhwk->bk", masks.astype(sums), scores.astype(sums),
                                 preferred_element_type=jnp.float32)
        mix = jax.nn.softmax(jnp.tanh(head_scores), axis=-1)                       # over the K heads
        hypothesis = jnp.einsum("bk,bkn->bn", mix, head_logits)
        return AttentionOutput(logits=hypothesis[:, None], confidences=None, masks=masks)


class GateLayer(nn.Module):
    """tanh(BN(pooled @ W)): one confidence per gated hypothesis (dev branch's output gate), in
    float32 whatever the network's compute dtype."""

    num_gates: int
    gate_bn: bool = True
    bn_group_size: int | None = None

    @nn.compact
    def __call__(self, pooled: jax.Array, train: bool = False) -> jax.Array:
        scores = nn.Dense(self.num_gates, use_bias=False, kernel_init=kaiming_normal, dtype=jnp.float32,
                          name="gate")(pooled.astype(jnp.float32))
        if self.gate_bn:
            scores = batch_norm(train, jnp.float32, "bn", group_size=self.bn_group_size)(scores)
        return jnp.tanh(scores.astype(jnp.float32))
