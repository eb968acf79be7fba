"""The painless attention module of the paper and the authors' master branch (docs/method.md,
sections 1-2), and the pieces every attention variant shares.

A `PainlessModule` reads one feature map Z and, for each of its K heads, produces a mask M_k
(spatial softmax or sigmoid of a small convolution), the attended map H_k = M_k * Z, a class
hypothesis o_k from a reduction F(H_k) and (with gates) a confidence c_k. The dev branch's module
is in `rectify.py`; `network.py` attaches either to a backbone. The functions here are pure so
they can be tested and reused on their own.
"""

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wrna_jax.errors import ConfigError
from wrna_jax.models.layers import avg_pool_floor, batch_norm, conv, kaiming_normal, torch_default, torch_default_bias
from wrna_jax.models.outputs import AttentionOutput

# 'joint_softmax': one softmax over all K heads' positions together, as the authors' master branch
# computed it up to commit c88aeb1; kept to import checkpoints of that code.
MASK_FUNCTIONS = ("softmax", "sigmoid", "joint_softmax")
REDUCTIONS = ("project", "avg")
REGULARIZER_NORMS = ("paper", "released")
GATE_FUNCTIONS = ("softmax", "sigmoid")
OUTPUTS = ("all", "50")
MODULES = ("painless", "rectify")


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """Everything that shapes the attention modules, resolved from a preset and the config's
    overrides by `factory.attention_spec` (docs/method.md describes each field).

    module: 'painless' (paper, master branch: K hypotheses and gates per module) or 'rectify'
      (dev branch: one self-attended hypothesis per module, one global gate layer).
    attach: the backbone's attach-point scheme ('deepest', or 'rectify' for the dev branch).
    depth (AD) modules at the scheme's first attach points, width (AW) heads each.
    mask_kernel: 1 (paper) or 3 (released code) for the mask convolution.
    reduction, channel_reduction, attended_bn, shared_projection: the painless module's output
      heads (None for 'rectify', which has none of them).
    gate_bn: BatchNorm between the gates' dot products and tanh.
    gate_fn: how the confidences become weights: 'softmax', or 'sigmoid' normalised by its sum.
    output: 'all' (the backbone's classifier is one more gated hypothesis) or '50' (the gated
      attention output and the backbone's log-probabilities averaged; 'rectify' only).
    regularizer_norm: 'paper' (sum of squared off-diagonal Gram entries, summed over modules)
      or 'released' (their mean over the K*K entries and the batch, averaged over modules).
    regularizer_pool: masks are average-pooled this many cells square before the regulariser.
    bn_group_size: BatchNorm statistics over groups of this many examples (None: the batch).
    """

    module: str
    attach: str
    depth: int
    width: int
    gates: bool
    mask_fn: str
    mask_kernel: int
    reduction: str | None
    channel_reduction: bool | None
    attended_bn: bool | None
    shared_projection: bool | None
    gate_bn: bool
    gate_fn: str
    output: str
    regularizer_norm: str
    regularizer_pool: int
    bn_group_size: int | None = None


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


def diversity_regularizer(masks: Sequence[jax.Array], normalization: str, pool: int = 1) -> jax.Array:
    """Diversity loss over the modules' (B, H, W, K) masks (Eq. 3; docs/method.md).

    For each module and image, G = M M^T is the K x K Gram matrix of the flattened masks (first
    average-pooled `pool` x `pool`, dropping incomplete cells, as the dev branch does); the loss
    penalises its squared off-diagonal entries. Zero for K = 1 or orthogonal masks.
    """
    if normalization not in REGULARIZER_NORMS:
        raise ConfigError(f"Unknown regulariser normalisation {normalization!r}; "
                          f"choose one of {REGULARIZER_NORMS}.")
    if not masks:
        return jnp.zeros((), jnp.float32)
    per_module = []
    for m in masks:
        m = avg_pool_floor(m.astype(jnp.float32), pool)
        b, h, w, k = m.shape
        flat = m.reshape(b, h * w, k)
        gram = jnp.einsum("bpk,bpl->bkl", flat, flat)
        off_diagonal = jnp.square(gram * (1.0 - jnp.eye(k, dtype=jnp.float32)))
        if normalization == "paper":
            per_module.append(jnp.mean(jnp.sum(off_diagonal, axis=(1, 2))))
        else:
            per_module.append(jnp.mean(off_diagonal))
    stacked = jnp.stack(per_module)
    return jnp.sum(stacked) if normalization == "paper" else jnp.mean(stacked)


def gate_weights(confidences: jax.Array, gate_fn: str) -> jax.Array:
    """(B, G) confidences in [-1, 1] -> weights summing to 1 over G: a softmax, or sigmoids
    divided by their sum (+1e-6, as the dev branch)."""
    confidences = confidences.astype(jnp.float32)
    if gate_fn == "sigmoid":
        gates = jax.nn.sigmoid(confidences)
        return gates / (1e-6 + jnp.sum(gates, axis=-1, keepdims=True))
    return jax.nn.softmax(confidences, axis=-1)


def gated_combination(hypothesis_logits: jax.Array, gates: jax.Array | None) -> jax.Array:
    """Eq. 9 on log-probabilities: sum_i g_i log_softmax(o_i), or their mean without gates.

    hypothesis_logits: (B, H, N); gates: (B, H) weights (summing to 1 over H), or None.
    """
    log_probs = jax.nn.log_softmax(hypothesis_logits.astype(jnp.float32), axis=-1)
    if gates is None:
        return jnp.mean(log_probs, axis=1)
    return jnp.einsum("bh,bhn->bn", gates.astype(jnp.float32), log_probs)


def _stacked_kernel(module: nn.Module, name: str, shape: tuple[int, ...]) -> jax.Array:
    """A (fan_in, fan_out) kernel, or (K, fan_in, fan_out) for K independent heads, initialised
    as the authors' linear layers: kaiming normal over fan_in."""
    batch_axis = (0,) if len(shape) == 3 else ()
    init = nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=-2, out_axis=-1,
                                            batch_axis=batch_axis)
    return module.param(name, init, shape, jnp.float32)


class PainlessModule(nn.Module):
    """K attention heads, output heads and confidence gates on one feature map (paper and
    master branch)."""

    spec: AttentionSpec
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> AttentionOutput:
        spec, k = self.spec, self.spec.width
        norm = lambda name, **kw: batch_norm(train, self.dtype, name, group_size=spec.bn_group_size, **kw)
        if spec.channel_reduction:
            # The authors' conv_reduce keeps PyTorch's default initialisation.
            z = conv(z.shape[-1] // 2, 1, kernel_init=torch_default, dtype=self.dtype, name="conv_reduce")(z)
            z = norm("conv_bn")(z)
        b, h, w, c = z.shape
        mask_logits = conv(k, spec.mask_kernel, 1, spec.mask_kernel // 2, kernel_init=kaiming_normal,
                           dtype=self.dtype, name="mask_conv")(z)
        masks = spatial_masks(mask_logits, spec.mask_fn)
        # (B, K, H, W, C): every head's attended copy of Z, the mask broadcast over channels.
        attended = z[:, None] * jnp.moveaxis(masks, -1, 1)[..., None].astype(self.dtype)
        if spec.attended_bn:
            attended = norm("attended_bn")(attended)

        if spec.reduction == "project":
            flat = attended.reshape(b, k, h * w * c)
            if spec.shared_projection:
                kernel = _stacked_kernel(self, "projection", (h * w * c, c))
                reduced = jnp.einsum("bkf,fc->bkc", flat, kernel.astype(self.dtype))
            else:
                kernel = _stacked_kernel(self, "projection", (k, h * w * c, c))
                reduced = jnp.einsum("bkf,kfc->bkc", flat, kernel.astype(self.dtype))
            reduced = norm("projection_bn", axis=(-2, -1))(nn.relu(reduced))
        else:
            reduced = jnp.mean(attended, axis=(2, 3))

        out_kernel = _stacked_kernel(self, "head_kernel", (k, c, self.num_classes))
        out_bias = self.param("head_bias", torch_default_bias(c), (k, self.num_classes))
        logits = jnp.einsum("bkc,kcn->bkn", reduced, out_kernel.astype(self.dtype))
        logits = logits.astype(jnp.float32) + out_bias

        confidences = None
        if spec.gates:
            gate_kernel = _stacked_kernel(self, "gate_kernel", (k, c, 1))[..., 0]
            scores = jnp.einsum("bkc,kc->bk", reduced.astype(jnp.float32), gate_kernel)  # gates: float32
            if spec.gate_bn:
                scores = batch_norm(train, jnp.float32, "gate_bn", group_size=spec.bn_group_size)(scores)
            confidences = jnp.tanh(scores.astype(jnp.float32))
        return AttentionOutput(logits=logits, confidences=confidences, masks=masks)


class BackboneGate(nn.Module):
    """The confidence c_net of the backbone's own classifier, from its pooled features (paper
    and master branch), in float32 whatever the compute dtype."""

    gate_bn: bool = True
    bn_group_size: int | None = None

    @nn.compact
    def __call__(self, pooled: jax.Array, train: bool = False) -> jax.Array:
        score = nn.Dense(1, use_bias=False, kernel_init=kaiming_normal, dtype=jnp.float32,
                         name="gate")(pooled.astype(jnp.float32))
        if self.gate_bn:
            score = batch_norm(train, jnp.float32, "bn", group_size=self.bn_group_size)(score)
        return jnp.tanh(score.astype(jnp.float32))
