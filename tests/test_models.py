"""Backbones and the assembled attention network: shapes, parameter counts, gates, dtypes."""

import flax
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import model_config
from numerics import U_BFLOAT16, U_FLOAT32, assert_close_to, gamma, probable_error
from wrna_jax.models import create_model, gated_combination
from wrna_jax.state import init_variables

NATIVE = {"mnist_cnn": (40, 1, 5), "cifar_wrn": (32, 3, 3), "imagenet_resnet": (224, 3, 4)}


def init(model, size, channels, batch=4, seed=0):
    """Variables as training initialises them (one shared program per model) and an input."""
    x = jax.random.uniform(jax.random.key(seed + 1), (batch, size, size, channels))
    return init_variables(model, (size, size, channels), seed), x


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("width, expected", [(2, 68_883_240), (1, 25_557_032)])
def test_imagenet_resnet_parameter_counts_match_torchvision(width, expected):
    model = create_model(model_config("imagenet_resnet", ad=0, depth=50, width=width, num_classes=1000))
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert count(variables["params"]) == expected


@pytest.mark.parametrize("preset", ["paper", "released"])
@pytest.mark.parametrize("backbone", sorted(NATIVE))
def test_output_shapes_at_native_size(backbone, preset):
    size, channels, points = NATIVE[backbone]
    ad, aw, classes = points, 3, 7
    model = create_model(model_config(backbone, ad=ad, aw=aw, preset=preset, num_classes=classes,
                                      depth=50 if backbone == "imagenet_resnet" else 10))
    x = jnp.zeros((2, size, size, channels))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    out, _ = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)
    heads = 1 + ad * aw
    assert out.log_probs.shape == (2, classes)
    assert out.hypotheses.shape == (2, heads, classes)
    assert out.gates.shape == (2, heads)
    assert out.regularizer.shape == ()
    assert len(out.hypothesis_names) == heads and out.hypothesis_names[0] == "backbone"
    points = model.attached
    assert sorted(out.masks) == sorted(points)
    expected_hw = {"mnist_cnn": [4, 6, 6, 8, 18], "cifar_wrn": [8, 16, 32],
                   "imagenet_resnet": [7, 14, 28, 56]}[backbone]
    for point, hw in zip(points, expected_hw):
        assert out.masks[point].shape == (2, hw, hw, aw)


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_softmax_masks_sum_to_one_and_sigmoid_masks_in_unit_interval(preset):
    variables, x = init(create_model(model_config(ad=2, aw=2, preset=preset)), 40, 1)
    for mask_fn in ("softmax", "sigmoid"):
        model = create_model(model_config(ad=2, aw=2, preset=preset, mask_fn=mask_fn))
        out = jax.jit(model.apply)(variables, x)
        for mask in out.masks.values():
            if mask_fn == "softmax":
                # Each of the h*w masses is exp(l - max) / sum(exp): rounded in the exp, the sum of
                # h*w terms and the division; their sum adds another h*w-term sum.
                positions = mask.shape[1] * mask.shape[2]
                np.testing.assert_allclose(mask.sum(axis=(1, 2)), 1.0, rtol=gamma(2 * positions + 3))
            else:
                assert float(mask.min()) > 0.0 and float(mask.max()) < 1.0
            assert not np.allclose(mask, mask.mean())


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_backbone_hypothesis_is_the_plain_backbone(preset):
    """Gates giving all weight to out_net reproduce the plain backbone (docs/method.md, 1.5)."""
    attention_model = create_model(model_config(ad=2, preset=preset))
    plain_model = create_model(model_config(ad=0, preset=preset))
    variables, x = init(attention_model, 40, 1)
    plain_variables = jax.tree.map(lambda t: {"backbone": t["backbone"]}, variables,
                                   is_leaf=lambda t: isinstance(t, dict) and "backbone" in t)
    plain = jax.jit(plain_model.apply)(plain_variables, x)
    out = jax.jit(attention_model.apply)(variables, x)
    # The plain model's output is the log_softmax of its one hypothesis (a mean of one term),
    # inside the compiled program here against outside (a 10-class log-sum-exp: ~13 roundings).
    assert_close_to(plain.log_probs, jax.nn.log_softmax(plain.hypotheses[:, 0]), relative=gamma(13),
                    what="plain log-probabilities")
    one_hot = jnp.zeros(out.gates.shape).at[:, 0].set(1.0)
    # Two programs evaluate the same backbone: its ~8 layers (longest reduction: fc1's 2,048
    # inputs) may round differently.
    assert_close_to(gated_combination(out.hypotheses, one_hot), plain.log_probs,
                    relative=probable_error(2048, layers=8), what="one-hot gates vs plain backbone")


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_equal_gates_give_the_mean_of_the_hypotheses(preset):
    """Zero gate weights make every confidence tanh(0): the output is the plain mean."""
    model = create_model(model_config(ad=2, aw=2, preset=preset))
    variables, x = init(model, 40, 1)
    flat = flax.traverse_util.flatten_dict(variables["params"], sep="/")
    gate_keys = [k for k in flat if "gate" in k and ("kernel" in k or k.endswith("gate/kernel"))]
    assert len(gate_keys) == 3  # two modules' stacked gate kernels and the backbone gate
    flat = {k: jnp.zeros_like(v) if k in gate_keys else v for k, v in flat.items()}
    variables = {**variables, "params": flax.traverse_util.unflatten_dict(flat, sep="/")}
    out = jax.jit(model.apply)(variables, x)
    np.testing.assert_allclose(out.gates, 1.0 / 5, rtol=gamma(5 + 2))  # exp(0) / sum of 5 ones
    mean = jax.nn.log_softmax(out.hypotheses, axis=-1).mean(axis=1)
    # sum_i g_i log p_i with g_i = 1/5 (rounded) against a mean over 5: 5-term sums.
    np.testing.assert_allclose(out.log_probs, mean, rtol=0, atol=gamma(5 + 2) * float(np.max(np.abs(mean))))
    ungated = create_model(model_config(ad=2, aw=2, preset=preset, gates=False))
    # Another program evaluates the same network (see test_backbone_hypothesis_is_the_plain_backbone).
    assert_close_to(jax.jit(ungated.apply)(variables, x).log_probs, mean, relative=probable_error(2048, layers=10),
                    what="ungated vs equal gates")


@pytest.mark.parametrize("preset, reduction", [("paper", "avg"), ("released", "project")])
def test_every_attention_parameter_gets_a_finite_nonzero_gradient(preset, reduction):
    model = create_model(model_config(ad=2, aw=2, preset=preset, reduction=reduction))
    variables, x = init(model, 40, 1, batch=8)
    labels = jnp.arange(8) % 10

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        nll = -jnp.take_along_axis(out.log_probs, labels[:, None], axis=1).mean()
        return nll + out.regularizer

    grads = flax.traverse_util.flatten_dict(jax.jit(jax.grad(loss))(variables["params"]), sep="/")
    attention = {k: g for k, g in grads.items() if not k.startswith("backbone/")}
    # paper: per module the mask conv, head kernel and bias, gate kernel, plus the backbone gate;
    # released: 14 per module (reduction, 4 BatchNorms, projection, ...), plus the gate and its BN.
    assert len(attention) == {"paper": 2 * 4 + 1, "released": 2 * 14 + 3}[preset]
    for name, grad in attention.items():
        assert np.all(np.isfinite(grad)), name
        assert np.any(grad != 0), name


# The MNIST CNN in bfloat16 is covered, forward and backward, by tests/test_steps.py's training
# test; here the residual blocks of a WRN.
@pytest.mark.parametrize("backbone, size, channels, ad", [("cifar_wrn", 16, 3, 1)])
def test_bfloat16_forward_matches_float32(backbone, size, channels, ad):
    """bf16 compute with fp32 params: probabilities agree to 8 bfloat16 roundings (0.031; each
    layer rounds its output to 8 significant bits and logits of a few units then move probabilities
    by p (1 - p) dlogit), predictions nearly always."""
    f32 = create_model(model_config(backbone, ad=ad, aw=2))
    bf16 = create_model(model_config(backbone, ad=ad, aw=2, dtype="bfloat16"))
    variables, x = init(f32, size, channels, batch=16)
    _, state = jax.jit(lambda v, x: f32.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    variables = {"params": variables["params"], **state}
    ref = jax.jit(f32.apply)(variables, x)
    low = jax.jit(bf16.apply)(variables, x)
    assert low.log_probs.dtype == jnp.float32
    assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32
    np.testing.assert_allclose(np.exp(low.log_probs), np.exp(ref.log_probs), atol=8 * U_BFLOAT16)
    np.testing.assert_allclose(low.gates, ref.gates, atol=8 * U_BFLOAT16)
    assert np.mean(np.argmax(low.log_probs, -1) == np.argmax(ref.log_probs, -1)) >= 0.9


@pytest.mark.parametrize("overrides, message", [
    (dict(ad=6), r"attention.depth \(AD\) = 6.*5 attach points.*use 0..5"),
    (dict(aw=0), r"attention.width \(AW\) = 0: it must be at least 1"),
    (dict(preset="fancy"), r"Unknown attention.preset 'fancy'; valid choices are 'paper', 'released'"),
    (dict(backbone="vgg"), r"Unknown model.backbone 'vgg'; valid choices are 'cifar_wrn', 'imagenet_resnet', 'mnist_cnn'"),
    (dict(reduction="max"), r"Unknown attention.reduction 'max'.*'project', 'avg'"),
    (dict(mask_fn="relu"), r"Unknown attention.mask_fn 'relu'.*'softmax', 'sigmoid'"),
    (dict(mask_kernel=5), r"Unknown attention.mask_kernel 5.*1, 3"),
    (dict(dtype="float16"), r"Unknown model.dtype 'float16'.*'float32', 'bfloat16'"),
    (dict(backbone="cifar_wrn", depth=27), r"model.depth=27 is not a valid WRN depth"),
    (dict(backbone="cifar_wrn", ad=4), r"3 attach points \('group3', 'group2', 'group1'\)"),
    (dict(backbone="imagenet_resnet", depth=34), r"Unknown model.depth for imagenet_resnet 34.*50, 101, 152"),
    (dict(regularizer_pool=3), r"Unknown attention.regularizer_pool 3.*1, 2"),
])
def test_invalid_configs_fail_at_creation_naming_the_valid_choices(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model(model_config(**overrides))


def test_convolution_of_more_channels_is_xlas():
    from wrna_jax.models import convolution

    channels = convolution.SMALL_INPUT_CHANNELS + 1
    x, w = jnp.ones((2, 9, 9, channels)), jnp.ones((3, 3, channels, 5))
    conv = lambda x, w: convolution.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1)))(x, w))
    assert "custom_vjp" not in jaxpr and "platform_index" not in jaxpr


@pytest.mark.parametrize("kernel, channels, padding", [(5, 1, 0), (3, 4, 2)])
def test_convolution_matches_xla_values_and_gradients(kernel, channels, padding):
    """wrna_jax.models.convolution against lax.conv_general_dilated: the forward pass is XLA's
    (equal), the col2im input gradient of few-channel inputs (1 and 4 channels) and the filter
    gradient within the worst-case rounding of two summation orders (tests/numerics.py)."""
    from wrna_jax.models import convolution

    x = jax.random.normal(jax.random.key(0), (2, 9, 9, channels))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, channels, 5))
    args = ((1, 1), ((padding, padding), (padding, padding)))
    kwargs = dict(lhs_dilation=(1, 1), rhs_dilation=(1, 1), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = jax.jit(lambda x, w: convolution.conv_general_dilated(x, w, *args, **kwargs))
    xla = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, *args, **kwargs))
    np.testing.assert_array_equal(ours(x, w), xla(x, w))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(ours(x, w)), argnums=(0, 1)))(x, w))
    assert "custom_vjp" in jaxpr, jaxpr[:2000]

    cotangent = jax.random.normal(jax.random.key(2), xla(x, w).shape)
    got = jax.vjp(ours, x, w)[1](cotangent)
    want = jax.vjp(xla, x, w)[1](cotangent)
    # d/dx sums kernel^2 x outputs-channels terms g*w, d/dw sums the output positions' x*g: each
    # evaluation within gamma(terms) of its magnitude (the same sums over |g| and |x|, |w|).
    magnitudes = jax.vjp(xla, jnp.abs(x), jnp.abs(w))[1](jnp.abs(cotangent))
    terms = (kernel * kernel * 5, int(np.prod(cotangent.shape[:3])))
    for name, a, b, magnitude, n in zip(("x", "w"), got, want, magnitudes, terms):
        assert np.all(np.abs(np.asarray(a) - np.asarray(b)) <= 2 * gamma(n) * np.asarray(magnitude)), name


@pytest.mark.parametrize("groups, statistics", [(1, False), (2, True)])
def test_batch_norm_by_products_matches_the_plain_form_and_float64(groups, statistics):
    """normalization's CPU form (statistics as products with ones, closed-form gradient) and the
    plain form (means, autodiff), both float32, against the exact values in float64: every output
    and gradient within a few gamma(n) of its magnitude (n = examples per group: the length of
    every sum involved). The loss reads y only, as training does (the statistics' cotangents are
    symbolic zeros), or also the statistics."""
    from wrna_jax.models import normalization

    n, features, eps = 96, 6, 1e-5
    keys = jax.random.split(jax.random.key(0), 5)
    x = np.array(jax.random.normal(keys[0], (groups, n, features)) * 2 + 0.5)
    x[..., -1] *= 3e-3  # a variance (~4e-5) of the order of epsilon, which then counts
    scale = np.asarray(jax.random.uniform(keys[1], (features,), minval=0.5, maxval=1.5))
    bias = np.asarray(jax.random.normal(keys[2], (features,)))
    g = np.asarray(jax.random.normal(keys[3], (groups, n, features)))
    g_stats = np.asarray(jax.random.normal(keys[4], (2, groups, features))) * statistics

    def loss(fn, x, scale, bias):
        y, mean, var = fn(x, scale, bias, eps)
        if not statistics:
            return jnp.sum(y * g)
        return jnp.sum(y * g) + jnp.sum(mean * g_stats[0]) + jnp.sum(var * g_stats[1])

    def evaluate(fn, dtype):
        inputs = [jnp.asarray(a, dtype) for a in (x, scale, bias)]
        outputs = jax.jit(lambda *a: fn(*a, eps))(*inputs)
        grads = jax.jit(jax.grad(lambda *a: loss(fn, *a), argnums=(0, 1, 2)))(*inputs)
        return [np.asarray(v, np.float64) for v in (*outputs, *grads)]

    # The exact values in float64, written out: biased statistics per group, BatchNorm's
    # closed-form gradient, and the statistics' own (d mean/dx = 1/n, d var/dx = 2 (x - mean)/n).
    mean64 = x.astype(np.float64).mean(axis=1)
    var64 = np.square(x - mean64[:, None]).mean(axis=1)
    signed = (x - mean64[:, None]) / np.sqrt(var64 + eps)[:, None]
    dx64 = (scale / np.sqrt(var64 + eps))[:, None] / n * (n * g - g.sum(1, keepdims=True)
                                                          - signed * (g * signed).sum(1, keepdims=True))
    dx64 += g_stats[0][:, None] / n + 2 * g_stats[1][:, None] * (x - mean64[:, None]) / n
    exact = [signed * scale + bias, mean64, var64, dx64, (g * signed).sum((0, 1)), g.sum((0, 1))]
    products = evaluate(normalization._normalize_products, jnp.float32)
    plain = evaluate(normalization._normalize_plain, jnp.float32)
    y, mean, var, dx, dscale, dbias = exact
    inv_std = 1 / np.sqrt(var + eps)[:, None]
    xhat = np.abs(x - mean[:, None]) * inv_std
    dy_terms = np.abs(g) + np.mean(np.abs(g), 1, keepdims=True) + xhat * np.mean(np.abs(g) * xhat, 1, keepdims=True)
    magnitudes = [scale * (np.abs(x) * inv_std + np.mean(np.abs(x), 1, keepdims=True) * inv_std + xhat) + np.abs(bias),
                  np.mean(np.abs(x), 1), np.mean(np.square(x), 1) + np.square(mean),
                  scale * inv_std * dy_terms + (np.abs(g_stats[0])[:, None] + np.abs(g_stats[1])[:, None]
                                                * (np.abs(x) + np.abs(mean[:, None]))) / n,
                  np.sum(np.abs(g) * xhat, (0, 1)), np.sum(np.abs(g), (0, 1))]
    names = ("y", "mean", "var", "dx", "dscale", "dbias")
    for form, values in (("products", products), ("plain", plain)):
        for name, got, want, magnitude in zip(names, values, exact, magnitudes):
            assert np.all(np.abs(got - want) <= 8 * gamma(n * groups) * magnitude), (form, name)


def test_batch_norm_statistics_are_float32_exact_when_the_mean_dwarfs_the_spread():
    """Both forms' batch statistics at |mean| / std = 100 (where E[x^2] - E[x]^2 would lose about
    four digits) against float64. Derived bound (Higham, section 4.2): the computed mean is within
    e = (gamma(n) + 2u) mean|x| of exact; the deviations x - mean are then off by at most e each,
    which adds at most e^2 to the variance (their exact sum is zero), and subtracting, squaring,
    summing n non-negative terms and dividing add gamma(n) + 4u relatively. With n = 8 examples per
    group that bound is below 1e-6 relative."""
    from wrna_jax.models import normalization

    groups, n, features, ratio = 4, 8, 16, 100.0
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 2.0, features)
    x = (ratio * std * rng.choice([-1.0, 1.0], features) + std * rng.standard_normal((groups, n, features)))
    x = x.astype(np.float32)
    exact = np.asarray(x, np.float64)
    mean, var = exact.mean(1), exact.var(1)
    e = (gamma(n) + 2 * U_FLOAT32) * np.abs(exact).mean(1)
    var_bound = e ** 2 / var + gamma(n) + 5 * U_FLOAT32
    assert np.all(var_bound < 1e-6)
    ones, zeros = jnp.ones(features), jnp.zeros(features)
    for form in (normalization._normalize_products, normalization._normalize_plain):
        _, got_mean, got_var = jax.jit(lambda x: form(x, ones, zeros, 1e-5))(x)
        assert np.all(np.abs(np.asarray(got_mean, np.float64) - mean) <= e), form.__name__
        assert np.all(np.abs(np.asarray(got_var, np.float64) / var - 1) <= var_bound), form.__name__


def test_mnist_cnn_trains_through_the_cpu_lowerings():
    """The model really runs them (flax passes unit dilations and every BatchNorm goes through
    normalization.normalize): conv1's custom input gradient and the BatchNorms' custom gradients
    appear in the training gradient's program, and no reduce_window (slow to differentiate)."""
    model = create_model(model_config("mnist_cnn", ad=0))
    x = jnp.zeros((2, 40, 40, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: nothing compiled

    def loss(params, batch_stats):
        out, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out.log_probs)

    jaxpr = str(jax.make_jaxpr(jax.grad(loss))(variables["params"], variables["batch_stats"]))
    assert jaxpr.count("custom_vjp_call") >= 1 + 7, jaxpr.count("custom_vjp_call")  # conv1, bn1-bn7
    assert "platform_index" in jaxpr
    assert "reduce_window" not in jaxpr  # its 2x2 max pools are a reshape and a max (layers.max_pool)


def test_max_pool_matches_reduce_window():
    from wrna_jax.models.layers import max_pool

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    np.testing.assert_array_equal(max_pool(x, 2, 2), flax.linen.max_pool(x, (2, 2), (2, 2)))
    np.testing.assert_array_equal(max_pool(x, 3, 2, 1),
                                  flax.linen.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1))))


def test_each_released_number_has_the_recipe_of_the_commit_that_produced_it():
    """docs/method.md, section 6: (config, argument) -> (commit's network layout, WRN depth, AD,
    Nesterov, the regulariser's mask pooling, dropout); the held-out validation split by default."""
    from configs import cifar10, cifar100, dogs

    runs = {(cifar10, None): ("authors_ea7d4af", 28, 3, False, 1, 0.0),        # 3.45%
            (cifar10, "wrn40"): ("authors_ea7d4af", 40, 3, False, 1, 0.0),     # 3.46%
            (cifar100, None): ("authors_ea7d4af", 40, 3, False, 1, 0.0),       # 17.8%
            (cifar10, "dropout"): ("authors", 40, 3, True, 2, 0.3),            # 3.14% (8c87096)
            (cifar10, "tip"): ("authors", 28, 3, True, 2, 0.0),                # 288ec61
            (cifar10, "baseline"): ("zagoruyko", 28, 0, False, 2, 0.0),
            (cifar100, "baseline,wrn28"): ("zagoruyko", 28, 0, False, 2, 0.0)}
    for (module, arg), expected in runs.items():
        config = module.get_config(arg)
        model = create_model(config)
        got = (config.model.layout, config.model.depth, model.spec.depth, config.optimizer.nesterov,
               model.spec.regularizer_pool, config.model.dropout)
        assert got == expected, (module.__name__, arg)
        assert config.dataset.validation.protocol == "holdout" and not config.dataset.eval_split
    assert "validation" not in cifar10.get_config("authors_protocol").dataset
    assert create_model(dogs.get_config()).spec.regularizer_pool == 1                  # 0b671d5
    assert create_model(dogs.get_config("tip")).spec.regularizer_pool == 2
    for arg in ("tip,dropout", "wrn28,wrn40", "fancy"):
        with pytest.raises(ValueError):
            cifar10.get_config(arg)


def test_bn_scale_init_uniform_draws_every_batch_norm_scale_and_nothing_else():
    """'uniform' (PyTorch before 1.2): every BatchNorm scale U[0, 1), independently; 'ones'
    leaves the parameters as they are; anything else fails at model creation."""
    from wrna_jax.models.layers import initial_bn_scales

    params = {"bn": {"scale": jnp.ones(512), "bias": jnp.zeros(512)}, "gate": {"bn": {"scale": jnp.ones(512)}},
              "conv": {"kernel": jnp.ones((3, 3))}}
    assert initial_bn_scales(params, jax.random.key(0), "ones") is params
    drawn = initial_bn_scales(params, jax.random.key(0), "uniform")
    for scale in (drawn["bn"]["scale"], drawn["gate"]["bn"]["scale"]):
        assert 0 <= float(scale.min()) and float(scale.max()) < 1 and abs(float(scale.mean()) - 0.5) < 0.05
    assert not np.array_equal(drawn["bn"]["scale"], drawn["gate"]["bn"]["scale"])
    assert np.array_equal(drawn["bn"]["bias"], params["bn"]["bias"]) and np.all(drawn["conv"]["kernel"] == 1)
    config = model_config()
    config.model.bn_scale_init = "normal"
    with pytest.raises(ValueError, match=r"model.bn_scale_init 'normal'.*'ones', 'uniform'"):
        create_model(config)


def test_bfloat16_keeps_the_rectify_sums_and_the_gates_in_float32():
    """docs/method.md, 'Precision': with bfloat16 compute, the attend_rectify module's weighted
    sums over positions ((B, K, N) logits and (B, K) scores) and the gate layer's dense product
    (B, AD + 1) take float32 operands; the backbone's classifier (B, N) runs in bfloat16."""
    batch, heads, classes, depth = 2, 3, 10, 2
    model = create_model(model_config(preset="attend_rectify", ad=depth, aw=heads, num_classes=classes,
                                      dtype="bfloat16"))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 40, 40, 1))))
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, jax.ShapeDtypeStruct((batch, 40, 40, 1), jnp.float32))

    def products(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield eqn.outvars[0].aval.shape, {v.aval.dtype for v in eqn.invars}
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from products(sub)

    dtypes = {}
    for shape, operands in products(jaxpr.jaxpr):
        dtypes.setdefault(shape, set()).update(operands)
    for shape in ((batch, heads, classes), (batch, heads), (batch, depth + 1)):
        assert dtypes[shape] == {jnp.dtype(jnp.float32)}, shape
    assert jnp.dtype(jnp.bfloat16) in dtypes[(batch, classes)]
