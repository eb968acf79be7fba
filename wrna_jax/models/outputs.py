"""Structured outputs shared by backbones, attention modules and the full model."""

import flax.struct
import jax


@flax.struct.dataclass
class BackboneOutput:
    """What every backbone returns.

    features: the maps attention may attach to, by name (NHWC).
    pooled: the vector the backbone's own confidence gate reads.
    logits: the backbone's own classifier output (B, num_classes).
    """

    features: dict[str, jax.Array]
    pooled: jax.Array
    logits: jax.Array


@flax.struct.dataclass
class AttentionOutput:
    """What one attention module returns for its K heads.

    logits: (B, K, num_classes) hypotheses o_k.
    confidences: (B, K) pre-softmax gate scores c_k in [-1, 1], or None without gates.
    masks: (B, H, W, K) attention masks M_k.
    """

    logits: jax.Array
    confidences: jax.Array | None
    masks: jax.Array


@flax.struct.dataclass
class ModelOutput:
    """Everything training, evaluation and plots need from one forward pass.

    log_probs: (B, N) the combined prediction: gated (or mean) sum of log-probabilities.
    hypotheses: (B, H, N) logits of every hypothesis, backbone first (H = 1 + AD*AW for the
      'painless' module, 1 + AD for 'rectify'). Ten-crop evaluation
      (`metrics.multi_crop_output`) fills it with log-probabilities averaged over the crops
      instead; argmax and log_softmax read both alike.
    gates: (B, 1 + AD*AW) gate weights (uniform without gates; [1] for a plain backbone).
    masks: attended layer name -> (B, H, W, AW) masks.
    regularizer: the diversity regulariser (unweighted; 0 without attention).
    hypothesis_names: names matching the hypotheses axis ('backbone', 'layer4/head0', ...).
    """

    log_probs: jax.Array
    hypotheses: jax.Array
    gates: jax.Array
    masks: dict[str, jax.Array]
    regularizer: jax.Array
    hypothesis_names: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())
