"""The training step: gradient accumulation against the unaccumulated step and against an
independent per-micro-batch computation, and bfloat16 compute against float32."""

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cluttered_mnist
from numerics import U_BFLOAT16, U_FLOAT32, assert_same_updates, gamma, probable_error
from workers import random_batches, reordered
from wrna_jax import parallel, steps
from wrna_jax.models import create_model, regularizer_weight
from wrna_jax.state import create_train_state

STEPS_PER_EPOCH = 10


def small_config(**overrides):
    config = cluttered_mnist.get_config()
    config.update_from_flattened_dict({"attention.depth": 2, "batch_size": 16,
                                       "optimizer.learning_rate": 0.01, **overrides})
    return config


def batches(count, size=16, seed=0):
    return random_batches(count, size, seed)


_PROGRAMS = {}


def programs(config):
    """(mesh, compiled step, initial state) of `config`, built once per config for the module:
    the tests share their configurations, and tracing and loading a step again costs seconds."""
    key = config.to_json_best_effort(sort_keys=True)
    if key not in _PROGRAMS:
        model = create_model(config)
        mesh = parallel.create_mesh(1)
        _PROGRAMS[key] = (mesh, steps.make_train_step(config, model, mesh, STEPS_PER_EPOCH),
                          create_train_state(config, model, (40, 40, 1), mesh, STEPS_PER_EPOCH))
    return _PROGRAMS[key]


def train(config, data, states=None, reorderings=0):
    """(initial state, final state, per-step metrics) of `make_train_step` on one device;
    the state after every step is appended to `states` when given. With `reorderings`, also the
    final states of that many runs on the same batches with their examples reordered (within
    micro-batches), from the same initial state, for tests/numerics.py's noise estimate."""
    mesh, step, first = programs(config)
    runs = [data] + [reordered(data, seed, config.grad_accum_steps) for seed in range(reorderings)]
    initial = jax.device_get(first)
    finals = []
    for run in runs:
        state = jax.tree.map(jnp.copy, first)  # the step donates (consumes) its input state
        history = []
        for batch in run:
            state, metrics = step(state, parallel.shard_batch(batch, parallel.batch_sharding(mesh)))
            history.append(jax.device_get(metrics))
            if states is not None and run is data:
                states.append(jax.device_get(state))
        finals.append(jax.device_get(state))
        if run is data:
            result = (initial, finals[0], history)
    return result + (finals[1:],) if reorderings else result


def variables(state):
    return flax.traverse_util.flatten_dict({"params": state.params, "batch_stats": state.batch_stats}, sep="/")


# Accumulation reorders the step's sums (per micro-batch, then over micro-batches); see
# tests/numerics.py. The longest reduction is the input BatchNorm's, over 16 x 40 x 40 values.
REDUCTION = 16 * 40 * 40
# Parameter updates, beyond the reordering noise of the reference: measured at most 4e-4 of a
# tensor's update (Intel Xeon; 1.2e-3 on an H100 in full float32 without the noise term, whose
# convolutions sum in yet another order); a micro-batch left out or counted twice changes
# updates by ~1/2.
ACCUMULATION_RTOL = 5e-3
REORDERINGS = 3


def values_per_example(config, image_shape=(40, 40, 1)) -> dict[str, int]:
    """{'<BatchNorm path>': how many values of one example each of its statistics averages}."""
    from wrna_jax.models.layers import BatchNorm

    model = create_model(config)
    # Shapes only: traced, never compiled.
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, *image_shape)), train=False))
    _, state = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *image_shape)), train=True, mutable=["batch_stats"],
                                                    capture_intermediates=lambda m, _: isinstance(m, BatchNorm)),
                              variables)
    outputs = flax.traverse_util.flatten_dict(state["intermediates"], sep="/")
    scales = flax.traverse_util.flatten_dict(variables["params"], sep="/")
    return {path[: -len("/__call__")]: int(np.prod(out[0].shape[1:]) // np.prod(scales[path[: -len("__call__")] + "scale"].shape))
            for path, out in outputs.items()}


def test_accumulation_equals_the_full_batch_step_when_micro_batches_share_statistics():
    # Micro-batch j is examples j, j+k, ...: repeating each example k times gives k identical
    # micro-batches, so BatchNorm sees the full batch's statistics in every one of them.
    data = [{key: np.repeat(value[:8], 2, axis=0) for key, value in batches(1)[0].items()}]
    initial, full, full_metrics, noise = train(small_config(), data, reorderings=REORDERINGS)
    _, accumulated, acc_metrics = train(small_config(grad_accum_steps=2), data)
    assert int(accumulated.step) == 1
    # PyTorch's running variance moves by the unbiased batch variance n/(n-1) v: the same v in
    # every micro-batch, but n = 8 examples' values instead of 16 (a 7% larger step for the
    # BatchNorms of one value per example). Scale the full-batch updates by that ratio.
    counts = values_per_example(small_config())
    assert counts["backbone/bn1"] == 40 * 40 and counts["backbone/bn7"] == 1
    expected = {}
    for name, value in variables(full).items():
        if name.startswith("batch_stats/") and name.endswith("/var"):
            n_full, n_micro = 16 * counts[name[len("batch_stats/"):-len("/var")]], 8 * counts[name[len("batch_stats/"):-len("/var")]]
            ratio = (n_micro / (n_micro - 1)) / (n_full / (n_full - 1))
            old = variables(initial)[name]
            value = old + (value - old) * ratio
        expected[name] = value
    assert_same_updates(variables(initial), expected, variables(accumulated),
                        rtol=ACCUMULATION_RTOL, reduction_size=REDUCTION, what="accumulated vs full batch",
                        reordered=[variables(s) for s in noise])
    momenta = [np.concatenate([leaf.ravel() for leaf in jax.tree.leaves(state.opt_state)])
               for state in (accumulated, full)]  # after one step: the (decayed) gradients
    assert np.linalg.norm(momenta[0] - momenta[1]) <= ACCUMULATION_RTOL * np.linalg.norm(momenta[1])
    for a, b in zip(acc_metrics, full_metrics):
        assert a.keys() == b.keys()
        assert a["learning_rate"] == b["learning_rate"]
        # The loss is a mean of log-probabilities whose inputs went through the reordered
        # BatchNorm statistics: gamma of the longest reduction bounds its relative change.
        for key in ("loss", "nll"):
            np.testing.assert_allclose(a[key], b[key], rtol=gamma(REDUCTION), err_msg=key)
        # The regulariser is a mean of squared Gram entries of masks that sum to 1: at most 1.
        np.testing.assert_allclose(a["regularizer"], b["regularizer"], rtol=0, atol=gamma(REDUCTION))
        # Accuracy counts the 16 predictions: rounding may at most flip a near-tie.
        assert abs(a["accuracy"] - b["accuracy"]) <= 1 / 16


def test_accumulation_with_batchnorm_is_the_mean_over_ghost_batches():
    config = small_config(grad_accum_steps=2)
    batch = batches(1)[0]
    batch["image"][1::2] += 1.0  # micro-batches with clearly different input statistics
    initial, accumulated, metrics, noise = train(config, [batch], reorderings=REORDERINGS)

    # Independent computation: each micro-batch (every 2nd example) through the model on its
    # own, gradients and updated statistics averaged, then one optimiser update.
    model = create_model(config)
    weight = regularizer_weight(config.attention)

    def loss(params, batch_stats, images, labels):
        out, updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                   mutable=["batch_stats"])
        nll = -jnp.mean(out.log_probs[jnp.arange(labels.shape[0]), labels])
        return nll + weight * out.regularizer, updates["batch_stats"]

    grad_fn = jax.jit(jax.grad(loss, has_aux=True))
    micro = [grad_fn(initial.params, initial.batch_stats, batch["image"][j::2], batch["label"][j::2])
             for j in range(2)]
    grads = jax.tree.map(lambda a, b: (a + b) / 2, micro[0][0], micro[1][0])
    stats = jax.tree.map(lambda a, b: (a + b) / 2, micro[0][1], micro[1][1])
    updates, _ = initial.tx.update(grads, initial.opt_state, initial.params)
    expected = jax.tree.map(jnp.add, initial.params, updates)
    assert_same_updates(variables(initial), variables(accumulated),
                        variables(initial.replace(params=expected, batch_stats=stats)),
                        rtol=ACCUMULATION_RTOL, reduction_size=REDUCTION, what="scan vs separate micro-batches",
                        reordered=[variables(s) for s in noise])
    assert np.isfinite(metrics[0]["loss"])

    # Against the unaccumulated step: the input BatchNorm (before any parameter) keeps the
    # full batch's running mean exactly; its running variance is the mean of the micro-batch
    # variances, lower by the variance of the micro-batch means; and the parameters differ.
    _, full, _ = train(small_config(), [batch])
    # (1 - momentum) x a mean of 16 x 40 x 40 values in [0, 2]: the mean of the micro-batch means
    # is the full batch's mean up to two orders of summation, gamma(n) E|x| each.
    second_moment = float(np.mean(np.square(batch["image"])))
    np.testing.assert_allclose(accumulated.batch_stats["backbone"]["bn1"]["mean"],
                               full.batch_stats["backbone"]["bn1"]["mean"], rtol=0,
                               atol=0.1 * 2 * gamma(REDUCTION) * np.sqrt(second_moment))
    halves = [batch["image"][j::2] for j in range(2)]
    lower = 0.1 * np.var([h.mean() for h in halves])  # (1 - momentum) x variance of the means
    # Each running variance is within 0.1 x 3 gamma(n) E x^2 of exact (tests/numerics.py).
    np.testing.assert_allclose(full.batch_stats["backbone"]["bn1"]["var"]
                               - accumulated.batch_stats["backbone"]["bn1"]["var"], lower, rtol=0,
                               atol=2 * 0.1 * 3 * gamma(REDUCTION) * second_moment)
    assert lower > 10 * 2 * 0.1 * 3 * gamma(REDUCTION) * second_moment  # the check can tell
    difference = max(float(np.max(np.abs(a - b))) for a, b in
                     zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(full.params)))
    assert difference > 1e-4


def test_batch_size_must_divide_by_devices_times_accumulation_steps():
    config = small_config(batch_size=12, grad_accum_steps=8)
    with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by 1 device\(s\) x "
                                         r"grad_accum_steps=8 = 8: use a multiple of 8 \(e.g. 8 or 16\)"):
        steps.check_grad_accum(config, 1)
    config.grad_accum_steps = 0
    with pytest.raises(ValueError, match=r"grad_accum_steps=0: use a positive integer"):
        steps.check_grad_accum(config, 1)
    config.update(batch_size=32, grad_accum_steps=4)
    assert steps.check_grad_accum(config, 8) == 4
    with pytest.raises(ValueError, match=r"use a multiple of 32 \(e.g. 32 or 64\)"):
        steps.check_grad_accum(small_config(batch_size=48, grad_accum_steps=4), 8)


def learnable_batches(count, size=16, seed=0):
    """Faint noise with a bright block whose position is the label: a signal to learn."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        labels = rng.integers(0, 10, size).astype(np.int32)
        images = 0.2 * rng.random((size, 40, 40, 1), np.float32)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 16 * row:16 + 16 * row, 2 + 7 * col:9 + 7 * col] += 0.8
        out.append({"image": images, "label": labels, "mask": np.ones(size, bool)})
    return out


# bfloat16 compute against float32 (README states the same bounds). bfloat16 keeps 8 significant
# bits (unit roundoff 2^-8 = 3.9e-3) and rounds after every layer; the forward pass of the network
# has ~10 layers (5 convolutions, 2 dense, the attention module's), so from the same parameters the
# step-1 loss may differ by ~10 roundings: 3.9% (measured 0.7%). The first update's direction
# (cosine with the float32 update; measured 0.92 at XLA's default and at its lowest optimisation
# level, which rounds in other places) must stay well above orthogonal. Later steps start from
# different parameters, and how far two such trajectories drift depends on where each CPU rounds,
# so they are only required to learn.
BF16_FIRST_LOSS_RTOL = 10 * U_BFLOAT16
BF16_FIRST_UPDATE_COSINE = 0.8


def test_bfloat16_training_tracks_float32_within_the_stated_tolerance():
    data = learnable_batches(3)
    fp32_states, bf16_states = [], []
    initial, fp32, fp32_metrics = train(small_config(), data, fp32_states)
    _, bf16, bf16_metrics = train(small_config(**{"model.dtype": "bfloat16"}), data, bf16_states)
    fp32_first, bf16_first = fp32_states[0], bf16_states[0]
    for leaf in jax.tree.leaves((bf16.params, bf16.batch_stats, bf16.opt_state)):
        assert leaf.dtype in (np.float32, np.int32)  # parameters, statistics, momenta: float32
    assert all(m["loss"].dtype == np.float32 for m in bf16_metrics)
    losses = np.array([[m["loss"] for m in fp32_metrics], [m["loss"] for m in bf16_metrics]])
    flat = lambda state: np.concatenate([leaf.ravel() for leaf in jax.tree.leaves(state.params)])
    start, a, b = flat(initial), flat(fp32_first), flat(bf16_first)
    cosine = float(np.dot(a - start, b - start) / np.linalg.norm(a - start) / np.linalg.norm(b - start))
    print(f"loss fp32 {losses[0]} bf16 {losses[1]}; first update cosine {cosine:.3f}")
    np.testing.assert_allclose(losses[1, 0], losses[0, 0], rtol=BF16_FIRST_LOSS_RTOL)
    assert cosine > BF16_FIRST_UPDATE_COSINE
    assert losses[1, -1] < losses[1, 0] and losses[0, -1] < losses[0, 0]  # both learn


def test_training_rejects_an_accumulation_that_does_not_divide_the_batch_before_any_work(tmp_path):
    from conftest import tiny_train_config
    from wrna_jax.train import train_and_evaluate

    config = tiny_train_config(str(tmp_path / "never_created"))
    config.grad_accum_steps = 3
    with pytest.raises(ValueError, match=r"batch_size=64 is not divisible by 1 device\(s\) x grad_accum_steps=3"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "never_created").exists() and not (tmp_path / "run").exists()


# The step's loss and gradient against an independent computation from the model's outputs, on a
# two-convolution toy backbone (tests/extension) at 8 x 8 pixels, batch 4: attention at both
# convolutions (AD = 2, AW = 2), so the regulariser sums or averages over two modules.
TOY_SHAPE, TOY_BATCH, TOY_CLASSES = (8, 8, 3), 4, 5
# Chained float32 reductions of at most 8 x 8 x 4 = 256 terms (BatchNorm over batch x positions,
# the projection), about 12 in the forward pass and 12 in the backward pass: two programs of the
# same function (fused differently) differ by at most Higham and Mary's bound of each.
TOY_RELATIVE = 2 * probable_error(256, layers=24)
# A regulariser weight large enough that its share of the mask convolutions' gradients is far
# above that rounding for every preset (the test checks it can tell; 'attend_rectify' pools its
# masks, whose regulariser is ~1e-5 here); the presets' own weights (1e-3 for 'released') are
# checked by the configured step's binding and in the loss.
TEST_WEIGHT = 1e4
# The step and the reference are one program per model, compiled at XLA's lowest CPU
# optimisation level (half the compile time; the same function up to rounding).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def toy_model(preset, gates):
    import sys

    from conftest import TESTS, model_config

    if os.path.join(TESTS, "extension") not in sys.path:
        sys.path.insert(0, os.path.join(TESTS, "extension"))
    import toy_backbone  # noqa: F401  (registers 'toy_cnn')

    config = model_config("toy_cnn", preset=preset, gates=gates, num_classes=TOY_CLASSES)
    return config, create_model(config)


def toy_variables(model, seed=0):
    """Variables of the model's shapes without compiling its initialisation: kernels normal with
    std sqrt(2 / fan_in) (the authors' kaiming normal), BatchNorm scales 1, biases, running means
    0 and running variances 1, other biases U(+-0.1)."""
    from wrna_jax.state import abstract_variables

    rng = np.random.default_rng(seed)

    def init(path, leaf):
        name = path[-1].key
        if name in ("scale", "var"):
            return np.ones(leaf.shape, np.float32)
        if name in ("bias", "mean"):
            return np.zeros(leaf.shape, np.float32)
        if "kernel" in name or name == "projection":
            fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim != 3 else leaf.shape[1]
            return (rng.standard_normal(leaf.shape) * np.sqrt(2 / fan_in)).astype(np.float32)
        return rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(init, abstract_variables(model, TOY_SHAPE))


def reference_regularizer(masks, norm, pool):
    """Eq. 3 from the masks, written out: per module and image the K x K Gram matrix of the
    (pooled) masks; 'paper' sums its squared off-diagonal entries, means over images and sums
    over modules, 'released' means them over images and all K x K entries, then over modules."""
    per_module = []
    for m in masks:
        b, h, w, k = m.shape
        h, w = h // pool * pool, w // pool * pool
        m = m[:, :h, :w].reshape(b, h // pool, pool, w // pool, pool, k).mean(axis=(2, 4)).reshape(b, -1, k)
        gram = jnp.einsum("bpk,bpl->bkl", m, m)
        squares = jnp.square(gram) * (1 - jnp.eye(k))
        per_module.append(squares.sum(axis=(1, 2)).mean() if norm == "paper" else squares.mean())
    return sum(per_module) if norm == "paper" else sum(per_module) / len(per_module)


def step_and_reference(model, variables, batch, weights, coefficients):
    """One program: `steps.train_step`'s (gradients, metrics) at each regulariser weight, and the
    independent (gradients, (NLL, regulariser, gates)) of a * NLL + b * regulariser at each
    (a, b). The step's optimiser is momentum with decay 0 (optax.trace), whose state after one
    step is exactly the gradient it was given."""
    import optax

    from wrna_jax.state import TrainState

    spec = model.spec
    tx = optax.trace(decay=0.0)
    state = TrainState(step=jnp.int32(0), apply_fn=model.apply, params=variables["params"], tx=tx,
                       opt_state=tx.init(variables["params"]), batch_stats=variables["batch_stats"],
                       rng=jax.random.PRNGKey(0))

    def step(weight):
        new, metrics = steps.train_step(state, batch, model=model, regularizer_weight=weight,
                                        schedule=optax.constant_schedule(0.0))
        return new.opt_state.trace, metrics

    # Independent: the NLL of the gated mixture of the hypotheses' log-softmax and Eq. 3 from
    # the masks, gradient by autodiff of a loss a * NLL + b * regulariser.
    def loss(params, a, b):
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, batch["image"],
                             train=True, mutable=["batch_stats"])
        mixture = jnp.sum(out.gates[..., None] * jax.nn.log_softmax(out.hypotheses, axis=-1), axis=1)
        nll = -jnp.mean(mixture[jnp.arange(TOY_BATCH), batch["label"]])
        regularizer = reference_regularizer(list(out.masks.values()), spec.regularizer_norm, spec.regularizer_pool)
        return a * nll + b * regularizer, (nll, regularizer, out.gates)

    def both(weights, coefficients):
        reference = jax.vmap(jax.grad(loss, has_aux=True), in_axes=(None, 0, 0))(
            variables["params"], coefficients[:, 0], coefficients[:, 1])
        return jax.vmap(step)(weights), reference

    program = jax.jit(both).lower(weights, coefficients).compile(FAST_COMPILE)
    return jax.device_get(program(weights, coefficients))


@pytest.mark.parametrize("gates", [True, False])
@pytest.mark.parametrize("preset", ["paper", "released", "attend_rectify"])
def test_step_loss_and_gradient_match_an_independent_computation(preset, gates):
    from wrna_jax.models.factory import PRESETS

    config, model = toy_model(preset, gates)
    spec = model.spec
    assert (spec.depth, spec.width) == (2, 2) and spec.regularizer_norm == PRESETS[preset]["regularizer_norm"]
    preset_weight = PRESETS[preset]["regularizer_weight"]
    # The configured step (training's) binds the preset's weight.
    configured = steps.configured_train_step(config, model, parallel.create_mesh(1), STEPS_PER_EPOCH)
    assert configured.keywords["regularizer_weight"] == preset_weight

    rng = np.random.default_rng(0)
    batch = {"image": rng.random((TOY_BATCH, *TOY_SHAPE), np.float32),
             "label": np.arange(TOY_BATCH, dtype=np.int32) % TOY_CLASSES}
    weights = np.array([TEST_WEIGHT, 0.0, preset_weight], np.float32)
    coefficients = np.array([[1, 0], [0, 1], [1, TEST_WEIGHT]], np.float32)
    (grads, metrics), (reference, (nll, regularizer, gate_values)) = step_and_reference(
        model, toy_variables(model), batch, weights, coefficients)
    nll, regularizer, gate_values = nll[0], regularizer[0], gate_values[0]
    names = (("backbone", "conv2/head0", "conv2/head1", "conv1/head0", "conv1/head1") if spec.module == "painless"
             else ("backbone", "conv2", "conv1"))
    assert model.hypothesis_names == names and gate_values.shape == (TOY_BATCH, len(names))
    hypotheses = len(names)
    np.testing.assert_allclose(gate_values.sum(-1), 1, rtol=0, atol=hypotheses * 2 * U_FLOAT32)
    if not gates:
        np.testing.assert_array_equal(gate_values, np.float32(1 / hypotheses))

    # The loss: NLL + weight x regulariser, each term as computed independently.
    for i, weight in enumerate(weights):
        np.testing.assert_allclose(metrics["nll"][i], nll, rtol=TOY_RELATIVE)
        np.testing.assert_allclose(metrics["regularizer"][i], regularizer, rtol=TOY_RELATIVE)
        expected = np.float64(metrics["nll"][i]) + np.float64(weight) * np.float64(metrics["regularizer"][i])
        np.testing.assert_allclose(metrics["loss"][i], expected, rtol=4 * U_FLOAT32, err_msg=f"weight {weight}")
    assert TEST_WEIGHT * regularizer > 100 * 4 * U_FLOAT32 * nll  # the loss shows the term

    # The gradient of every tensor: at weight 0 the NLL's, at TEST_WEIGHT the independent one, and
    # the regulariser's share (the difference between the two) TEST_WEIGHT x the regulariser's own
    # gradient. Each side is within TOY_RELATIVE of the sizes of the terms it sums.
    flat = lambda tree, i: {k: v[i] for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}
    g_nll, g_reg, g_ref = (flat(reference, i) for i in range(3))
    g_weighted, g_zero = flat(grads, 0), flat(grads, 1)
    sizes = {name: np.linalg.norm(g_nll[name]) + TEST_WEIGHT * np.linalg.norm(g_reg[name]) for name in g_nll}
    floor = U_FLOAT32 * max(sizes.values())  # a gradient that cancels to zero (a bias before BatchNorm)
    for name, size in sizes.items():
        tolerance = TOY_RELATIVE * size + floor
        np.testing.assert_array_less(np.linalg.norm(g_zero[name] - g_nll[name]),
                                     TOY_RELATIVE * np.linalg.norm(g_nll[name]) + floor, err_msg=f"NLL gradient of {name}")
        np.testing.assert_array_less(np.linalg.norm(g_weighted[name] - g_ref[name]), tolerance,
                                     err_msg=f"gradient of {name}")
        share = g_weighted[name] - g_zero[name]
        np.testing.assert_array_less(np.linalg.norm(share - TEST_WEIGHT * g_reg[name]), 2 * tolerance,
                                     err_msg=f"regulariser's share of the gradient of {name}")
    masks = [name for name in sizes if name.endswith("mask_conv/kernel")]
    assert len(masks) == 2
    for name in masks:  # the check can tell: the regulariser's share is far above the tolerance
        assert TEST_WEIGHT * np.linalg.norm(g_reg[name]) > 20 * (2 * TOY_RELATIVE * sizes[name] + 2 * floor), name
