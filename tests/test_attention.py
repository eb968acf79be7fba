"""The attention module, regulariser and combination against independent numpy computations."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close_to, gamma, probable_error
from wrna_jax.models import PainlessModule, AttentionSpec, diversity_regularizer, gated_combination
from wrna_jax.models.factory import PRESETS


def naive_regularizer(masks: list[np.ndarray], normalization: str) -> float:
    """Eq. 3 with explicit loops over images and head pairs."""
    per_module = []
    for m in masks:
        b, h, w, k = m.shape
        total = 0.0
        for n in range(b):
            for i in range(k):
                for j in range(k):
                    if i != j:
                        total += float(np.dot(m[n, :, :, i].ravel(), m[n, :, :, j].ravel())) ** 2
        per_module.append(total / b if normalization == "paper" else total / (b * k * k))
    return sum(per_module) if normalization == "paper" else sum(per_module) / len(per_module)


@pytest.mark.parametrize("normalization", ["paper", "released"])
def test_regularizer_matches_double_loop(normalization):
    rng = np.random.default_rng(0)
    masks = [rng.random((3, 4, 5, 3)).astype(np.float32), rng.random((3, 2, 2, 3)).astype(np.float32)]
    got = diversity_regularizer([jnp.asarray(m) for m in masks], normalization)
    # float32 against float64 loops: Gram entries are 20-term dot products of positive values,
    # squared, then summed over at most 3 x 3 x 3 entries per module and over 2 modules.
    np.testing.assert_allclose(float(got), naive_regularizer(masks, normalization),
                               rtol=gamma(2 * 20 + 27 + 2 + 4))


@pytest.mark.parametrize("normalization", ["paper", "released"])
def test_regularizer_vanishes_for_one_head_and_orthogonal_masks(normalization):
    one_head = jnp.asarray(np.random.default_rng(1).random((2, 4, 4, 1)), jnp.float32)
    assert float(diversity_regularizer([one_head], normalization)) == 0.0
    orthogonal = np.zeros((2, 4, 4, 2), np.float32)
    orthogonal[:, :2, :, 0] = 1.0 / 8
    orthogonal[:, 2:, :, 1] = 1.0 / 8
    assert float(diversity_regularizer([jnp.asarray(orthogonal)], normalization)) == 0.0
    assert float(diversity_regularizer([jnp.asarray(orthogonal[..., ::-1] + orthogonal)], normalization)) > 0


def test_regularizer_rejects_unknown_normalization():
    with pytest.raises(ValueError, match="'paper', 'released'"):
        diversity_regularizer([jnp.ones((1, 2, 2, 2))], "frobenius")


def test_gated_combination_identities():
    logits = jax.random.normal(jax.random.key(0), (4, 5, 7))
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    # A mean over 5 against weights 0.2 (not exact in binary): 5-term sums of 5 products.
    atol = gamma(5 + 2) * float(np.max(np.abs(log_probs)))
    np.testing.assert_allclose(gated_combination(logits, None), log_probs.mean(axis=1), rtol=0, atol=atol)
    np.testing.assert_allclose(gated_combination(logits, jnp.full((4, 5), 0.2)), log_probs.mean(axis=1),
                               rtol=0, atol=atol)
    one_hot = jnp.zeros((4, 5)).at[:, 3].set(1.0)
    np.testing.assert_array_equal(gated_combination(logits, one_hot), log_probs[:, 3])  # x * 1 + 0s


# ---- The whole module against a numpy transcription of docs/method.md, sections 1-2 (training mode). ----

def np_batch_norm(x, params, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * params["scale"] + params["bias"]


def np_conv_same(x, kernel):
    """Stride-1 convolution with symmetric zero padding, by explicit loops over the window."""
    kh, kw = kernel.shape[:2]
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((b, h, w, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i:i + h, j:j + w, :] @ kernel[i, j]
    return out


def np_attention_module(z, params, spec: AttentionSpec):
    if spec.channel_reduction:
        z = np_conv_same(z, params["conv_reduce"]["kernel"])
        z = np_batch_norm(z, params["conv_bn"], (0, 1, 2))
    b, h, w, c = z.shape
    logits = np_conv_same(z, params["mask_conv"]["kernel"])
    if spec.mask_fn == "softmax":
        flat = logits.reshape(b, h * w, -1)
        flat = np.exp(flat - flat.max(axis=1, keepdims=True))
        masks = (flat / flat.sum(axis=1, keepdims=True)).reshape(logits.shape)
    else:
        masks = 1 / (1 + np.exp(-logits))
    k = masks.shape[-1]
    attended = np.stack([z * masks[..., i:i + 1] for i in range(k)], axis=1)
    if spec.attended_bn:
        attended = np_batch_norm(attended, params["attended_bn"], (0, 1, 2, 3))
    if spec.reduction == "project":
        kernel = params["projection"]
        reduced = np.stack([attended[:, i].reshape(b, -1) @ (kernel if kernel.ndim == 2 else kernel[i])
                            for i in range(k)], axis=1)
        reduced = np_batch_norm(np.maximum(reduced, 0), params["projection_bn"], (0,))
    else:
        reduced = attended.mean(axis=(2, 3))
    out = np.stack([reduced[:, i] @ params["head_kernel"][i] + params["head_bias"][i] for i in range(k)], 1)
    scores = np.stack([reduced[:, i] @ params["gate_kernel"][i, :, 0] for i in range(k)], axis=1)
    if spec.gate_bn:
        scores = np_batch_norm(scores, params["gate_bn"], (0,))
    return out, np.tanh(scores), masks


@pytest.mark.parametrize("preset, reduction, mask_fn", [("released", "project", "softmax"),
                                                        ("paper", "avg", "softmax"),
                                                        ("paper", "project", "sigmoid"),
                                                        ("released", "avg", "sigmoid")])
def test_attention_module_matches_numpy(preset, reduction, mask_fn):
    fields = {key: value for key, value in PRESETS[preset].items() if key != "regularizer_weight"}
    spec = AttentionSpec(depth=1, width=3, gates=True, **{**fields, "reduction": reduction, "mask_fn": mask_fn})
    module = PainlessModule(spec, num_classes=5)
    z = jax.random.normal(jax.random.key(0), (6, 5, 5, 8))
    variables = jax.jit(module.init)(jax.random.key(1), z)  # one program, not op by op
    # Randomise the BatchNorm affine parameters too, so they are checked as well.
    flat = flax.traverse_util.flatten_dict(variables["params"], sep="/")
    keys = jax.random.split(jax.random.key(2), len(flat))
    flat = {name: value + 0.1 * jax.random.normal(key, value.shape) if "bn" in name else value
            for key, (name, value) in zip(keys, flat.items())}
    params = flax.traverse_util.unflatten_dict(flat, sep="/")
    out, _ = jax.jit(lambda v: module.apply(v, z, train=True, mutable=["batch_stats"]))({**variables, "params": params})
    np_params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    logits, confidences, masks = np_attention_module(np.asarray(z, np.float64), np_params, spec)
    # float32 against float64: at most 6 chained reductions (reduce conv, BatchNorm over 150 or
    # 450 values, mask conv, softmax, projection over h*w*c = 200, head), the longest of 450 terms.
    relative = probable_error(450, layers=6)
    assert_close_to(out.masks, masks, relative=relative, what="masks")
    assert_close_to(out.logits, logits, relative=relative, what="logits")
    assert_close_to(out.confidences, confidences, relative=relative, what="confidences")
    assert out.logits.shape == (6, 3, 5)
