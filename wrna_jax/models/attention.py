"""The painless attention module (SPEC section 1) and the pieces that combine its hypotheses.

An `AttentionModule` reads one feature map Z and, for each of its K heads, produces a mask
M_k (spatial softmax or sigmoid of a small convolution), the attended map H_k = M_k * Z, a
class hypothesis o_k from a reduction F(H_k), and (with gates) a confidence c_k. The
`AttentionNetwork` in `network.py` wraps a backbone with such modules; the functions here are
pure so they can be tested and reused on their own.
"""

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.models.layers import batch_norm, conv
from wrna_jax.models.outputs import AttentionOutput

# 'joint_softmax': one softmax over all K heads' positions together, as the released
# checkpoints' AttentionHead computes it (`softmax(conv(x).view(b, K*H*W), 1)`); used to import them.
MASK_FUNCTIONS = ("softmax", "sigmoid", "joint_softmax")
REDUCTIONS = ("project", "avg")
REGULARIZER_NORMS = ("paper", "released")


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """Everything that shapes the attention modules; built from the config by `create_model`.

    depth (AD) modules at the backbone's deepest attach points, width (AW) heads each.
    mask_kernel: 1 (paper) or 3 (released) for the mask convolution.
    channel_reduction: 1x1 conv C -> C/2 + BatchNorm before the heads (released).
    attended_bn: one BatchNorm over the attended maps, shared by the heads (released).
    shared_projection: the `project` reduction W_F is shared by a module's heads (paper).
    gate_bn: BatchNorm between the gate's dot product and tanh (released).
    regularizer_norm: 'paper' (sum of squared off-diagonal Gram entries, summed over modules)
      or 'released' (their mean over the K*K entries and the batch, averaged over modules).
    regularizer_weight: its weight in the training loss (paper 0.1, released code 1e-3).
    """

    depth: int
    width: int
    mask_fn: str = "softmax"
    reduction: str = "project"
    gates: bool = True
    mask_kernel: int = 3
    channel_reduction: bool = True
    attended_bn: bool = True
    shared_projection: bool = False
    gate_bn: bool = True
    regularizer_norm: str = "released"
    regularizer_weight: float = 1e-3


def spatial_masks(mask_logits: jax.Array, mask_fn: str) -> jax.Array:
    """(B, H, W, K) logits -> masks; softmax runs over the H*W positions per image and head
    ('joint_softmax': over the H*W*K positions and heads of an image together)."""
    mask_logits = mask_logits.astype(jnp.float32)
    if mask_fn == "sigmoid":
        return jax.nn.sigmoid(mask_logits)
    b, h, w, k = mask_logits.shape
    if mask_fn == "joint_softmax":
        return jax.nn.softmax(mask_logits.reshape(b, h * w * k), axis=1).reshape(b, h, w, k)
    return jax.nn.softmax(mask_logits.reshape(b, h * w, k), axis=1).reshape(b, h, w, k)


def diversity_regularizer(masks: Sequence[jax.Array], normalization: str) -> jax.Array:
    """Diversity loss of SPEC 1.2 over the modules' (B, H, W, K) masks (Eq. 3).

    For each module and image, G = M M^T is the K x K Gram matrix of the flattened masks;
    the loss penalises its squared off-diagonal entries. Zero for K = 1 or orthogonal masks.
    """
    if normalization not in REGULARIZER_NORMS:
        raise ValueError(f"Unknown regulariser normalisation {normalization!r}; "
                         f"choose one of {REGULARIZER_NORMS}.")
    if not masks:
        return jnp.zeros((), jnp.float32)
    per_module = []
    for m in masks:
        b, h, w, k = m.shape
        flat = m.reshape(b, h * w, k).astype(jnp.float32)
        gram = jnp.einsum("bpk,bpl->bkl", flat, flat)
        off_diagonal = jnp.square(gram * (1.0 - jnp.eye(k, dtype=jnp.float32)))
        if normalization == "paper":
            per_module.append(jnp.mean(jnp.sum(off_diagonal, axis=(1, 2))))
        else:
            per_module.append(jnp.mean(off_diagonal))
    stacked = jnp.stack(per_module)
    return jnp.sum(stacked) if normalization == "paper" else jnp.mean(stacked)


def gated_combination(hypothesis_logits: jax.Array, gates: jax.Array | None) -> jax.Array:
    """Eq. 9 on log-probabilities: sum_i g_i log_softmax(o_i), or their mean without gates.

    hypothesis_logits: (B, H, N); gates: (B, H) summing to 1 over H, or None.
    """
    log_probs = jax.nn.log_softmax(hypothesis_logits.astype(jnp.float32), axis=-1)
    if gates is None:
        return jnp.mean(log_probs, axis=1)
    return jnp.einsum("bh,bhn->bn", gates.astype(jnp.float32), log_probs)


def _dense_kernel(module: nn.Module, name: str, shape: tuple[int, ...]) -> jax.Array:
    """A (fan_in, fan_out) kernel, or (K, fan_in, fan_out) for K independent heads (LeCun init)."""
    batch_axis = (0,) if len(shape) == 3 else ()
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=batch_axis)
    return module.param(name, init, shape, jnp.float32)


class AttentionModule(nn.Module):
    """K attention heads, output heads and confidence gates on one feature map."""

    spec: AttentionSpec
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> AttentionOutput:
        spec, k = self.spec, self.spec.width
        if spec.channel_reduction:
            z = conv(z.shape[-1] // 2, 1, dtype=self.dtype, name="conv_reduce")(z)
            z = batch_norm(train, self.dtype, name="conv_bn")(z)
        b, h, w, c = z.shape
        mask_logits = conv(k, spec.mask_kernel, 1, spec.mask_kernel // 2, dtype=self.dtype,
                           name="mask_conv")(z)
        masks = spatial_masks(mask_logits, spec.mask_fn)
        # (B, K, H, W, C): every head's attended copy of Z, the mask broadcast over channels.
        attended = z[:, None] * jnp.moveaxis(masks, -1, 1)[..., None].astype(self.dtype)
        if spec.attended_bn:
            attended = batch_norm(train, self.dtype, name="attended_bn")(attended)

        if spec.reduction == "project":
            flat = attended.reshape(b, k, h * w * c)
            if spec.shared_projection:
                kernel = _dense_kernel(self, "projection", (h * w * c, c))
                reduced = jnp.einsum("bkf,fc->bkc", flat, kernel.astype(self.dtype))
            else:
                kernel = _dense_kernel(self, "projection", (k, h * w * c, c))
                reduced = jnp.einsum("bkf,kfc->bkc", flat, kernel.astype(self.dtype))
            reduced = batch_norm(train, self.dtype, name="projection_bn", axis=(-2, -1))(
                nn.relu(reduced))
        else:
            reduced = jnp.mean(attended, axis=(2, 3))

        out_kernel = _dense_kernel(self, "head_kernel", (k, c, self.num_classes))
        out_bias = self.param("head_bias", nn.initializers.zeros, (k, self.num_classes))
        logits = jnp.einsum("bkc,kcn->bkn", reduced, out_kernel.astype(self.dtype))
        logits = logits.astype(jnp.float32) + out_bias

        confidences = None
        if spec.gates:
            gate_kernel = _dense_kernel(self, "gate_kernel", (k, c, 1))[..., 0]
            scores = jnp.einsum("bkc,kc->bk", reduced, gate_kernel.astype(self.dtype))
            if spec.gate_bn:
                scores = batch_norm(train, jnp.float32, name="gate_bn")(scores)
            confidences = jnp.tanh(scores.astype(jnp.float32))
        return AttentionOutput(logits=logits, confidences=confidences, masks=masks)


class BackboneGate(nn.Module):
    """The confidence c_net of the backbone's own classifier, from its pooled features."""

    gate_bn: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pooled: jax.Array, train: bool = False) -> jax.Array:
        score = nn.Dense(1, use_bias=False, dtype=self.dtype, name="gate")(pooled)
        if self.gate_bn:
            score = batch_norm(train, jnp.float32, name="bn")(score)
        return jnp.tanh(score.astype(jnp.float32))
