"""Weights from PyTorch (docs/method.md, section 5): torchvision/timm ResNets and the authors'
checkpoints (master and dev branch).

Without torch: random state dicts with the real key names and shapes are converted and checked
layer by layer and as whole networks against independent NCHW transcriptions of the PyTorch
forward passes (`jax.lax` on the original OIHW kernels, PyTorch's BatchNorm inference formula
with epsilon 1e-5, transposed matmuls). With torch: ResNet logits against PyTorch itself (the
attention networks against PyTorch: tests/test_parity.py).
"""

import functools
import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from numerics import U_FLOAT32, assert_close_to, conv_error_bound, gamma, probable_error
from wrna_jax import convert as convert_cli
from wrna_jax.models import create_model
from wrna_jax.models.layers import batch_norm
from wrna_jax.models import resnet
from wrna_jax.models.resnet import ResNet
from wrna_jax.weights import (WeightMismatchError, apply_init_from, check_init_from, convert_released,
                              convert_backbone, load_backbone, load_released, released_config,
                              save_safetensors)
from wrna_jax.models import state_dicts as mapping
from wrna_jax.weights import files, pretrained

EPS = 1e-5
TINY_STAGES = (1, 1, 1, 1)   # a bottleneck "ResNet-14": every kind of layer, few of them
# Whole networks against their transcriptions, which sum in other orders (tests/numerics.py):
# ~14 layers whose longest reduction is layer4's 3x3 conv over 2 x 512 channels (9,216 terms);
# the released MNIST network's ~10 layers, longest the first module's projection over
# 16 x 18 x 18 values; the released tiny WRN's ~16 layers, longest its projections (16,384).
RESNET14_ERROR = probable_error(9216, layers=14)
MNIST_ERROR = probable_error(5184, layers=10)
RELEASED_WRN_ERROR = probable_error(16384, layers=16)


# Random state dicts with the PyTorch key names ------------------------------------------------

def _conv(sd, name, out, inp, k, rng, bias=False):
    sd[f"{name}.weight"] = rng.standard_normal((out, inp, k, k), np.float32) * np.float32(np.sqrt(2 / (inp * k * k)))
    if bias:
        sd[f"{name}.bias"] = rng.normal(0, 0.1, out).astype(np.float32)


def _linear(sd, name, out, inp, rng, bias=True):
    sd[f"{name}.weight"] = rng.standard_normal((out, inp), np.float32) * np.float32(np.sqrt(1 / inp))
    if bias:
        sd[f"{name}.bias"] = rng.normal(0, 0.1, out).astype(np.float32)


def _bn(sd, name, c, rng):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)


def resnet_state_dict(stages, width, num_classes, rng, naming="torchvision"):
    """torchvision `resnet50`/`wide_resnet50_2` keys (or the released code's WRN names)."""
    sd = {}
    _conv(sd, "conv1", 64, 3, 7, rng)
    _bn(sd, "bn1", 64, rng)
    inp = 64
    for s, n in enumerate(stages):
        planes = 64 * 2 ** s
        for b in range(n):
            p = f"layer{s + 1}.{b}" if naming == "torchvision" else f"group{s}.layer.{b}"
            _conv(sd, f"{p}.conv1", planes * width, inp, 1, rng)
            _bn(sd, f"{p}.bn1", planes * width, rng)
            _conv(sd, f"{p}.conv2", planes * width, planes * width, 3, rng)
            _bn(sd, f"{p}.bn2", planes * width, rng)
            _conv(sd, f"{p}.conv3", planes * 4, planes * width, 1, rng)
            _bn(sd, f"{p}.bn3", planes * 4, rng)
            if b == 0:
                sc, sb = (("downsample.0", "downsample.1") if naming == "torchvision"
                          else ("shortcut_conv", "shortcut_bn"))
                _conv(sd, f"{p}.{sc}", planes * 4, inp, 1, rng)
                _bn(sd, f"{p}.{sb}", planes * 4, rng)
            inp = planes * 4
    _linear(sd, "fc" if naming == "torchvision" else "linear", num_classes, inp, rng)
    return sd


def attention_state_dict(sd, prefix, in_ch, size, heads, num_classes, rng):
    """A released `AttentionModule(in_ch, size, size, num_classes, heads)` (conv_reduce version)."""
    c = in_ch // 2
    _conv(sd, f"{prefix}.conv_reduce", c, in_ch, 1, rng)
    _bn(sd, f"{prefix}.conv_bn", c, rng)
    _conv(sd, f"{prefix}.atthead.conv", heads, c, 3, rng)
    sd[f"{prefix}.atthead.conv.weight"] *= 4    # peaked masks, so the mask normalisation matters
    _bn(sd, f"{prefix}.atthead.bn", c, rng)
    sd[f"{prefix}.atthead.diag"] = (1 - np.eye(heads)).reshape(1, heads, heads).astype(np.float32)
    for k in range(heads):
        h = f"{prefix}.outhead_{k}"
        _linear(sd, f"{h}.F", c, c * size * size, rng, bias=False)
        _bn(sd, f"{h}.bn", c, rng)
        _linear(sd, f"{h}.out", num_classes, c, rng)
        _linear(sd, f"{h}.gate.gate", 1, c, rng, bias=False)
        _bn(sd, f"{h}.gate.bn", 1, rng)


MNIST_MAPS = {1: (32, 18), 2: (64, 8), 3: (128, 6), 4: (128, 6), 5: (128, 4)}


def released_mnist_state_dict(depth, heads, rng, gate="g_out+g_bn", conv_bias=False):
    sd = {}
    _bn(sd, "bn1", 1, rng)
    for i, (out, inp, k) in enumerate([(32, 1, 5), (64, 32, 3), (128, 64, 3), (128, 128, 3),
                                       (128, 128, 3)], start=1):
        _conv(sd, f"conv{i}", out, inp, k, rng, bias=conv_bias)
        _bn(sd, f"bn{i + 1}", out, rng)
    _linear(sd, "fc1", 256, 128 * 16, rng)
    _bn(sd, "bn7", 256, rng)
    _linear(sd, "fc2", 10, 256, rng)
    for i in range(6 - depth, 6):
        attention_state_dict(sd, f"att{i}", MNIST_MAPS[i][0], MNIST_MAPS[i][1], heads, 10, rng)
    if gate == "g_out+g_bn":
        _linear(sd, "g_out", 1, 256, rng, bias=False)
        _bn(sd, "g_bn", 1, rng)
    else:
        _linear(sd, "g_out.gate", 1, 256, rng, bias=False)
        _bn(sd, "g_out.bn", 1, rng)
    return sd


def released_wrn_state_dict(depth, heads, num_classes, width, image_size, rng, stages=(3, 4, 6, 3)):
    sd = resnet_state_dict(stages, width, num_classes, rng, naming="released")
    for i in range(4 - depth, 4):
        attention_state_dict(sd, f"att{i}", 256 * 2 ** i, image_size // 4 // 2 ** i, heads,
                             num_classes, rng)
    _linear(sd, "output_gate.gate", 1, 2048, rng, bias=False)
    _bn(sd, "output_gate.bn", 1, rng)
    return sd


# Independent NCHW transcriptions of the PyTorch forward passes (eval mode) -------------------

HIGHEST = lax.Precision.HIGHEST


def ref_conv(x, w, stride=1, pad=0, bias=None):
    y = lax.conv_general_dilated(x, jnp.asarray(w), (stride, stride), [(pad, pad)] * 2,
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HIGHEST)
    return y if bias is None else y + bias[None, :, None, None]


def ref_bn(x, sd, name):
    """PyTorch BatchNorm inference: (x - running_mean) / sqrt(running_var + 1e-5) * weight + bias."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = sd[f"{name}.running_mean"].reshape(shape), sd[f"{name}.running_var"].reshape(shape)
    return (x - mean) / jnp.sqrt(var + EPS) * sd[f"{name}.weight"].reshape(shape) + sd[f"{name}.bias"].reshape(shape)


def ref_linear(x, sd, name):
    y = jnp.matmul(x, sd[f"{name}.weight"].T, precision=HIGHEST)
    return y + sd[f"{name}.bias"] if f"{name}.bias" in sd else y


def ref_maxpool(x, k, s, p=0):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, k, k), (1, 1, s, s),
                             [(0, 0), (0, 0), (p, p), (p, p)])


def ref_resnet(sd, x, stages, naming="torchvision"):
    """torchvision Bottleneck ResNet; returns (features after each stage, pooled, logits)."""
    relu = jax.nn.relu
    x = ref_maxpool(relu(ref_bn(ref_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1")), 3, 2, 1)
    features = []
    for s, n in enumerate(stages):
        for b in range(n):
            p = f"layer{s + 1}.{b}" if naming == "torchvision" else f"group{s}.layer.{b}"
            stride = 2 if s > 0 and b == 0 else 1
            y = relu(ref_bn(ref_conv(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
            y = relu(ref_bn(ref_conv(y, sd[f"{p}.conv2.weight"], stride, 1), sd, f"{p}.bn2"))
            y = ref_bn(ref_conv(y, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            if b == 0:
                sc, sb = (("downsample.0", "downsample.1") if naming == "torchvision"
                          else ("shortcut_conv", "shortcut_bn"))
                x = ref_bn(ref_conv(x, sd[f"{p}.{sc}.weight"], stride), sd, f"{p}.{sb}")
            x = relu(x + y)
        features.append(x)
    pooled = x.mean(axis=(2, 3))
    return features, pooled, ref_linear(pooled, sd, "fc" if naming == "torchvision" else "linear")


def ref_attention(sd, prefix, x, heads, joint=False):
    """The master AttentionModule: (B, K, N) hypotheses and (B, K) tanh confidences; masks one
    softmax per head (4b8ed88), or one over all heads (`joint`, code up to c88aeb1)."""
    x = ref_bn(ref_conv(x, sd[f"{prefix}.conv_reduce.weight"]), sd, f"{prefix}.conv_bn")
    b, c, h, w = x.shape
    logits = ref_conv(x, sd[f"{prefix}.atthead.conv.weight"], 1, 1)
    if joint:
        mask = jax.nn.softmax(logits.reshape(b, heads * h * w), axis=1).reshape(b, heads, h, w)
    else:
        mask = jax.nn.softmax(logits.reshape(b, heads, h * w), axis=2).reshape(b, heads, h, w)
    attended = x[:, None] * mask[:, :, None]
    attended = ref_bn(attended.reshape(b * heads, c, h * w), sd, f"{prefix}.atthead.bn")
    attended = attended.reshape(b, heads, c, h, w)
    outs, gates = [], []
    for k in range(heads):
        hk = f"{prefix}.outhead_{k}"
        f = ref_bn(jax.nn.relu(ref_linear(attended[:, k].reshape(b, -1), sd, f"{hk}.F")), sd, f"{hk}.bn")
        outs.append(ref_linear(f, sd, f"{hk}.out"))
        gates.append(jnp.tanh(ref_bn(ref_linear(f, sd, f"{hk}.gate.gate"), sd, f"{hk}.gate.bn"))[:, 0])
    return jnp.stack(outs, 1), jnp.stack(gates, 1)


def ref_aggregate(outputs, gates):
    """AttentionModule.aggregate: softmax over all gates, gated sum of log_softmax hypotheses."""
    outputs = jax.nn.log_softmax(jnp.concatenate(outputs, 1), axis=2)
    gates = jax.nn.softmax(jnp.concatenate(gates, 1), axis=1)
    return (outputs * gates[..., None]).sum(1)


def ref_released_mnist(sd, x, depth, heads, gate="g_out+g_bn", joint=False):
    relu = jax.nn.relu
    x = ref_bn(x, sd, "bn1")
    outputs, gates = [], []
    specs = [(5, 0, True), (3, 0, True), (3, 0, False), (3, 1, False), (3, 0, False)]
    for i, (_, pad, pool) in enumerate(specs, start=1):
        y = ref_conv(x, sd[f"conv{i}.weight"], 1, pad, sd.get(f"conv{i}.bias"))
        x = ref_bn(relu(ref_maxpool(y, 2, 2) if pool else y), sd, f"bn{i + 1}")
        if i >= 6 - depth:
            o, g = ref_attention(sd, f"att{i}", x, heads, joint)
            outputs.append(o)
            gates.append(g)
    x = ref_bn(relu(ref_linear(x.reshape(x.shape[0], -1), sd, "fc1")), sd, "bn7")
    outputs.append(ref_linear(x, sd, "fc2")[:, None])
    weight, bn = ("g_out", "g_bn") if gate == "g_out+g_bn" else ("g_out.gate", "g_out.bn")
    gates.append(jnp.tanh(ref_bn(ref_linear(x, sd, weight), sd, bn)))
    return ref_aggregate(outputs, gates)


def ref_released_wrn(sd, x, depth, heads, stages):
    features, pooled, logits = ref_resnet(sd, x, stages, naming="released")
    outputs, gates = [], []
    for i in range(4 - depth, 4):
        o, g = ref_attention(sd, f"att{i}", features[i], heads)
        outputs.append(o)
        gates.append(g)
    outputs.append(logits[:, None])
    gates.append(jnp.tanh(ref_bn(ref_linear(pooled, sd, "output_gate.gate"), sd, "output_gate.bn")))
    return ref_aggregate(outputs, gates)


def dev_wrn_state_dict(depth, heads, num_classes, rows, rng, stages=TINY_STAGES):
    """A dev-branch (288ec61) WideResNetAttention: backbone, att{3-depth}..att2 on layer1..layer3,
    the gate layer (`rows` = depth or depth + 1) and the classifier."""
    sd = resnet_state_dict(stages, 1, num_classes, rng, naming="released")
    for i in range(3 - depth, 3):
        c = 256 * 2 ** i
        _conv(sd, f"att{i}.att_head.conv", heads, c, 3, rng)
        sd[f"att{i}.att_head.conv.weight"] *= 4   # peaked masks
        sd[f"att{i}.att_head.diag"] = (1 - np.eye(heads)).reshape(1, heads, heads).astype(np.float32)
        _conv(sd, f"att{i}.out_head.conv", heads * num_classes, c, 3, rng)
        _conv(sd, f"att{i}.score.conv", heads, c, 3, rng)
    _linear(sd, "output_gate.gates", rows, 2048, rng, bias=False)
    _bn(sd, "output_gate.bn", rows, rng)
    return sd


def ref_dev_wrn(sd, x, depth, heads, gate_fn, output, stages):
    """The dev WideResNetAttention's forward (eval mode): modules on layer1..layer3, then
    AttentionModule.aggregate with softmax or sigmoid gates, output 'all' or '50'."""
    features, pooled, logits = ref_resnet(sd, x, stages, naming="released")
    outputs = []
    for i in range(3 - depth, 3):
        z = features[i]
        b, _, h, w = z.shape
        mask = jax.nn.softmax(ref_conv(z, sd[f"att{i}.att_head.conv.weight"], 1, 1).reshape(b, heads, h * w), 2)
        out = ref_conv(z, sd[f"att{i}.out_head.conv.weight"], 1, 1).reshape(b, heads, -1, h * w)
        out = (out * mask[:, :, None]).sum(3)
        score = (ref_conv(z, sd[f"att{i}.score.conv.weight"], 1, 1).reshape(b, heads, 1, h * w) * mask[:, :, None]).sum(3)
        outputs.append((out * jax.nn.softmax(jnp.tanh(score), 1)).sum(1, keepdims=True))
    gates = jnp.tanh(ref_bn(ref_linear(pooled, sd, "output_gate.gates"), sd, "output_gate.bn"))
    if output == "all":
        outputs.append(logits[:, None])
    outputs = jax.nn.log_softmax(jnp.concatenate(outputs, 1), axis=2)
    if gate_fn == "softmax":
        weights = jax.nn.softmax(gates, 1)
    else:
        gates = jax.nn.sigmoid(gates)
        weights = gates / (1e-6 + gates.sum(1, keepdims=True))
    combined = (outputs * weights[..., None]).sum(1)
    if output == "50":
        combined = (combined + jax.nn.log_softmax(logits, 1)) / 2
    return combined, weights


def nhwc(x):
    return jnp.transpose(x, (0, 2, 3, 1))


def apply(module, variables, x):
    """`module.apply` in inference mode, compiled once (much faster than op by op on CPU)."""
    return jax.jit(functools.partial(module.apply, train=False))(variables, x)


# torchvision / timm ResNets --------------------------------------------------------------------

def test_wide_resnet50_2_every_key_used_every_parameter_filled():
    rng = np.random.default_rng(0)
    sd = {k: np.full(v.shape, 0.5, v.dtype) for k, v in
          resnet_state_dict((3, 4, 6, 3), 2, 1000, rng).items()}
    info, variables = convert_backbone(sd)
    assert (info["backbone"], info["stage_sizes"], info["width"], info["num_classes"]) == (
        "imagenet_resnet", [3, 4, 6, 3], 2, 1000)
    params = mapping.flat_shapes(variables)
    template = mapping.abstract_variables(ResNet(num_classes=1000, stage_sizes=(3, 4, 6, 3), width=2), (224, 224, 3))
    assert params == template                          # every Flax variable filled, shapes right
    assert sum(int(np.prod(s)) for p, s in params.items() if p[0] == "params") == 68_883_240
    used = {r.sources[0][0] for r in resnet.torch_rules(template)}
    assert used == {k for k in sd if not k.endswith("num_batches_tracked")}   # every key used
    assert len(used) == len(template)


def test_converted_layers_match_pytorch_formulas():
    rng = np.random.default_rng(1)
    sd = resnet_state_dict(TINY_STAGES, 2, 7, rng)
    _, variables = convert_backbone(sd)
    flat = flax.traverse_util.flatten_dict(variables)
    stats = {p[1:]: v for p, v in flat.items() if p[0] == "batch_stats"}
    checked = {"conv": 0, "bn": 0}
    for path, kernel in flat.items():
        if path[0] != "params" or path[-1] != "kernel" or kernel.ndim != 4:
            continue
        key = resnet.torch_module_key(path[1:-1]) + ".weight"
        oihw = sd[key]
        x = rng.standard_normal((2, oihw.shape[1], 9, 9), np.float32)
        stride, pad = 2, oihw.shape[-1] // 2
        want = ref_conv(x, oihw, stride, pad)
        conv = lambda x, k: lax.conv_general_dilated(x, k, (stride, stride), [(pad, pad)] * 2,
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST)
        got = conv(nhwc(x), kernel)
        bound = conv_error_bound(conv, nhwc(x), kernel, int(np.prod(oihw.shape[1:])))
        assert np.all(np.abs(nhwc(want) - got) <= bound), key
        checked["conv"] += 1
    for path, scale in flat.items():
        if path[0] != "params" or path[-1] != "scale":
            continue
        module = path[1:-1]
        bn_vars = {"params": {"scale": scale, "bias": flat[("params", *module, "bias")]},
                   "batch_stats": {"mean": stats[(*module, "mean")], "var": stats[(*module, "var")]}}
        x = rng.standard_normal((3, 5, 5, scale.shape[0]), np.float32)
        got = batch_norm(False, jnp.float32).apply(bn_vars, x)
        want = nhwc(ref_bn(np.transpose(x, (0, 3, 1, 2)), sd, resnet.torch_module_key(module)))
        # Elementwise, about 5 roundings in either order: within 8 u of the largest term (|y| < 8).
        np.testing.assert_allclose(got, want, rtol=0, atol=8 * U_FLOAT32 * 8)
        checked["bn"] += 1
    x = rng.standard_normal((4, 2048), np.float32)
    got = flax.linen.Dense(7).apply({"params": variables["params"]["fc"]}, x)
    bound = 2 * gamma(2048 + 1) * (np.abs(x) @ np.abs(sd["fc.weight"]).T + np.abs(sd["fc.bias"]))
    assert np.all(np.abs(got - (x @ sd["fc.weight"].T + sd["fc.bias"])) <= bound)
    assert checked == {"conv": 3 * 4 + 4 + 1, "bn": 3 * 4 + 4 + 1}


def test_converted_resnet_computes_the_pytorch_network():
    rng = np.random.default_rng(2)
    sd = resnet_state_dict(TINY_STAGES, 2, 7, rng)
    info, variables = convert_backbone(sd)
    x = rng.standard_normal((2, 3, 64, 64), np.float32)
    out = apply(resnet.TORCHVISION_WEIGHTS.module(info), variables, nhwc(x))
    _, _, want = jax.jit(ref_resnet, static_argnums=(2, 3))(sd, x, TINY_STAGES)
    assert_close_to(out.logits, want, relative=RESNET14_ERROR, what="ResNet-14 logits")


def test_mismatched_state_dicts_list_every_problem():
    rng = np.random.default_rng(3)
    sd = resnet_state_dict(TINY_STAGES, 1, 5, rng)
    del sd["layer2.0.bn1.running_var"]
    sd["layer3.0.conv2.weight"] = sd["layer3.0.conv2.weight"][:, :, :1, :1]
    sd["layer1.0.se.fc.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightMismatchError) as err:
        convert_backbone(sd, source="weights.pth")  # the file's name goes into the message
    e = err.value
    assert e.missing == ["layer2.0.bn1.running_var"]
    assert e.unexpected == ["layer1.0.se.fc.weight"]
    assert e.misshaped == ["layer3.0.conv2.weight (256, 256, 1, 1) (expected (256, 256, 3, 3))"]
    assert "weights.pth does not match the model: 1 missing, 1 unexpected and 1 mis-shaped" in str(e)
    with pytest.raises(ValueError, match="Only bottleneck ResNets"):
        convert_backbone({k: v for k, v in resnet_state_dict(TINY_STAGES, 1, 5, rng).items()
                        if ".conv3." not in k})
    with pytest.raises(ValueError, match="does not look like a torchvision ResNet.*'layer1.0.conv1.weight'"):
        convert_backbone(released_mnist_state_dict(1, 1, rng))


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    sd = resnet_state_dict(TINY_STAGES, 1, 5, np.random.default_rng(4))
    path = str(tmp_path / "w.safetensors")
    save_safetensors(sd, path)
    loaded = files.load_state_dict(path)
    assert set(loaded) == set(sd) and all(np.array_equal(loaded[k], sd[k]) for k in sd)
    data = open(path, "rb").read()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable .safetensors file.*download it again"):
        files.load_state_dict(str(truncated))
    with pytest.raises(ValueError, match="unknown weight file type"):
        files.load_state_dict(str(tmp_path / "w.npz"))
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        files.load_state_dict(str(tmp_path / "absent.safetensors"))
    prefixed = tmp_path / "dp.safetensors"
    save_safetensors({f"module.{k}": v for k, v in sd.items()}, str(prefixed))
    assert set(files.load_state_dict(str(prefixed))) == set(sd)


def test_convert_command_and_init_from(tmp_path, monkeypatch, capsys):
    from configs import dogs
    from wrna_jax import parallel
    from wrna_jax.models import resnet
    from wrna_jax.state import create_train_state

    monkeypatch.setitem(resnet.STAGE_SIZES, 14, TINY_STAGES)   # a tiny "depth 14" bottleneck ResNet
    rng = np.random.default_rng(5)
    sd = resnet_state_dict(TINY_STAGES, 1, 1000, rng)
    src, dst = str(tmp_path / "model.safetensors"), str(tmp_path / "converted")
    save_safetensors(sd, src)
    assert convert_cli.main([src, dst]) == 0
    assert "num_classes 1000" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        convert_cli.main([src, dst])
    assert "already exists; pass --force" in capsys.readouterr().err
    assert convert_cli.main([src, dst, "--force"]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    assert convert_cli.main([src, str(foreign), "--force"]) == 2
    assert "not a converted backbone" in capsys.readouterr().err and foreign.exists()
    info, restored = load_backbone(dst)
    _, direct = convert_backbone(sd)
    jax.tree.map(np.testing.assert_array_equal, restored, direct)
    assert json.load(open(os.path.join(dst, pretrained.METADATA)))["stage_sizes"] == list(TINY_STAGES)

    config = dogs.get_config()
    config.model.update(depth=14, width=1, num_classes=5)
    config.attention.update(depth=1, width=2)
    model = create_model(config)
    state = create_train_state(config, model, (32, 32, 3), parallel.create_mesh(1), 10)
    for init_from in (src, dst):   # a state dict converted on the fly, or the converted directory
        config.init_from = init_from
        check_init_from(config)
        new = apply_init_from(state, config)
        got = flax.traverse_util.flatten_dict(new.params)
        old = flax.traverse_util.flatten_dict(state.params)
        want = flax.traverse_util.flatten_dict(direct["params"])
        for path, value in got.items():
            if path[0] == "backbone" and path[1] != "fc":
                np.testing.assert_array_equal(value, want[path[1:]])
            else:   # the 5-class classifier, attention modules and gates stay as initialised
                np.testing.assert_array_equal(value, old[path])
        jax.tree.map(np.testing.assert_array_equal, new.batch_stats["backbone"], direct["batch_stats"])
        jax.tree.map(np.testing.assert_array_equal, new.opt_state, state.tx.init(new.params))

    config.model.width = 2
    config.init_from = dst
    with pytest.raises(ValueError, match="width 1, but the config builds model.depth=14, model.width=2"):
        check_init_from(config)
    config.init_from = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"wide_resnet50_2-95faca4d\.pth(.|\n)*python -m wrna_jax\.convert"):
        check_init_from(config)
    config.init_from = str(foreign)
    with pytest.raises(ValueError, match="not a converted backbone"):
        check_init_from(config)
    config.model.backbone = "cifar_wrn"
    with pytest.raises(ValueError, match="cifar_wrn. backbone has no pretrained weights.*unset config.init_from"):
        check_init_from(config)


def test_fine_grained_configs_default_to_the_imagenet_weights():
    from configs import birds, cifar10, cluttered_mnist, dogs, fine_grained

    for module in (dogs, birds):
        for arg in (None, "paper"):
            assert module.get_config(arg).init_from == fine_grained.DEFAULT_INIT_FROM
    assert not cifar10.get_config().get("init_from") and not cluttered_mnist.get_config().get("init_from")


# Released painless-attention checkpoints ------------------------------------------------------

@pytest.mark.parametrize("gate,conv_bias", [("g_out+g_bn", False), ("g_out.gate", True)])
def test_released_mnist_network_computes_the_released_function(tmp_path, gate, conv_bias):
    rng = np.random.default_rng(6)
    depth, heads = 3, 2
    sd = released_mnist_state_dict(depth, heads, rng, gate=gate, conv_bias=conv_bias)
    path = str(tmp_path / "model.safetensors")
    save_safetensors(sd, path)
    model, variables, config = load_released(path)
    assert (config.model.backbone, config.attention.depth, config.attention.width) == ("mnist_cnn", depth, heads)
    assert (config.attention.preset, config.attention.mask_fn, config.model.conv_bias) == ("released", "softmax", conv_bias)
    assert ("bias" in variables["params"]["backbone"]["conv1"]) == conv_bias  # biases only if the file has them
    x = rng.standard_normal((3, 1, 40, 40), np.float32)
    out = apply(model, variables, nhwc(x))
    reference = jax.jit(ref_released_mnist, static_argnums=(2, 3, 4, 5))
    want = reference(sd, x, depth, heads, gate, False)
    assert_close_to(out.log_probs, want, relative=MNIST_ERROR, what="released MNIST log-probabilities")
    # Checkpoints of the code up to c88aeb1 (one softmax over all heads) import with joint_softmax.
    joint_model, joint_variables, _ = load_released(path, mask_fn="joint_softmax")
    joint = reference(sd, x, depth, heads, gate, True)
    assert_close_to(apply(joint_model, joint_variables, nhwc(x)).log_probs, joint, relative=MNIST_ERROR,
                    what="joint-softmax import")
    assert np.abs(joint - want).max() > 100 * MNIST_ERROR * np.abs(want).max()   # the normalisation matters


def test_released_wrn_attention_network_computes_the_released_function(monkeypatch):
    from wrna_jax.models import resnet

    monkeypatch.setitem(resnet.STAGE_SIZES, 14, TINY_STAGES)   # a tiny "depth 14" bottleneck ResNet
    rng = np.random.default_rng(7)
    depth, heads, size = 3, 2, 64
    sd = released_wrn_state_dict(depth, heads, 6, 1, size, rng, stages=TINY_STAGES)
    config = released_config(sd)
    assert (config.model.depth, config.model.width, config.model.num_classes) == (14, 1, 6)
    model, variables = convert_released(sd, config)
    assert model.attached == ("layer4", "layer3", "layer2")
    x = rng.standard_normal((2, 3, size, size), np.float32)
    out = apply(model, variables, nhwc(x))
    want = jax.jit(ref_released_wrn, static_argnums=(2, 3, 4))(sd, x, depth, heads, TINY_STAGES)
    assert_close_to(out.log_probs, want, relative=RELEASED_WRN_ERROR, what="released WRN log-probabilities")


@pytest.mark.parametrize("gate_fn, output", [("softmax", "all"), ("sigmoid", "50")])
def test_dev_branch_wrn_checkpoint_computes_the_dev_function(monkeypatch, gate_fn, output):
    from wrna_jax.models import resnet

    monkeypatch.setitem(resnet.STAGE_SIZES, 14, TINY_STAGES)
    rng = np.random.default_rng(9)
    depth, heads, classes = 3, 2, 6
    sd = dev_wrn_state_dict(depth, heads, classes, depth + (output == "all"), rng)
    config = released_config(sd, gate_fn=gate_fn)
    assert (config.attention.preset, config.attention.depth, config.attention.width, config.attention.output,
            config.attention.gate_fn) == ("attend_rectify", depth, heads, output, gate_fn)
    model, variables = convert_released(sd, config)
    assert model.attached == ("layer3", "layer2", "layer1")   # att2, att1, att0; layer4 never
    x = rng.standard_normal((2, 3, 64, 64), np.float32)
    out = apply(model, variables, nhwc(x))
    want, weights = jax.jit(ref_dev_wrn, static_argnums=(2, 3, 4, 5, 6))(sd, x, depth, heads, gate_fn, output,
                                                                         TINY_STAGES)
    # ResNet-14's layers, then the modules' 3x3 convolutions over 1,024 x 9 inputs.
    relative = RESNET14_ERROR + probable_error(9216, 4)
    assert_close_to(out.log_probs, want, relative=relative, what="dev WRN")
    # Their gate rows are the modules from layer1 up, then the backbone ('all'); ours the backbone
    # first (weight 1/2 with '50'), then the modules from layer3.
    if output == "all":
        expected = jnp.concatenate([weights[:, -1:], weights[:, depth - 1::-1]], axis=1)
    else:
        expected = jnp.concatenate([jnp.full((2, 1), 0.5), 0.5 * weights[:, ::-1]], axis=1)
    assert_close_to(out.gates, expected, relative=relative, what="gate weights")
    assert np.abs(np.diff(np.asarray(expected), axis=1)).max() > 0.05   # distinct weights: the order matters


def test_released_checkpoint_errors():
    rng = np.random.default_rng(8)
    sd = released_mnist_state_dict(2, 2, rng)
    broken = {k: v for k, v in sd.items() if not k.startswith("att5.outhead_1.")}
    with pytest.raises(ValueError, match="different numbers of heads"):
        released_config(broken)
    skipped = {(k.replace("att4.", "att3.", 1) if k.startswith("att4.") else k): v for k, v in sd.items()}
    with pytest.raises(ValueError, match=r"not the deepest 2"):
        released_config(skipped)
    config = released_config(sd)
    bad = dict(sd)
    bad["att4.outhead_0.F.weight"] = bad["att4.outhead_0.F.weight"][:, :-1]
    del bad["g_bn.running_mean"]
    bad["att4.extra.weight"] = np.zeros(1, np.float32)
    with pytest.raises(WeightMismatchError) as err:
        convert_released(bad, config)
    assert err.value.missing == ["g_bn.running_mean"]
    assert err.value.unexpected == ["att4.extra.weight"]
    assert err.value.misshaped == ["att4.outhead_0.F.weight (64, 2303) (expected (64, 2304))"]
    with pytest.raises(ValueError, match="not a released painless-attention state dict"):
        released_config({"foo.weight": np.zeros(1)})


# Against PyTorch itself (skipped when torch is not installed) ---------------------------------

def _torch_modules():
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class Bottleneck(nn.Module):   # torchvision.models.resnet.Bottleneck
        def __init__(self, inp, planes, width, stride):
            super().__init__()
            inner = planes * width
            self.conv1 = nn.Conv2d(inp, inner, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(inner)
            self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(inner)
            self.conv3 = nn.Conv2d(inner, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or inp != planes * 4:
                self.downsample = nn.Sequential(nn.Conv2d(inp, planes * 4, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes * 4))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return F.relu(y + (x if self.downsample is None else self.downsample(x)))

    class TorchResNet(nn.Module):   # torchvision.models.ResNet with Bottleneck blocks
        def __init__(self, stages, width, num_classes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            inp = 64
            for s, n in enumerate(stages):
                blocks = []
                for b in range(n):
                    blocks.append(Bottleneck(inp, 64 * 2 ** s, width, 2 if s and not b else 1))
                    inp = 64 * 2 ** s * 4
                setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.fc = nn.Linear(inp, num_classes)
            self.stages = len(stages)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            for s in range(self.stages):
                x = getattr(self, f"layer{s + 1}")(x)
            return self.fc(x.mean((2, 3)))

    return torch, TorchResNet


def _randomise_batch_norms(torch, module, seed):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) + 0.5
    return module.eval()


def test_resnet_logits_match_pytorch(tmp_path):
    torch, TorchResNet = _torch_modules()
    torch.manual_seed(0)
    net = _randomise_batch_norms(torch, TorchResNet((1, 2, 1, 1), 2, 9), 0)
    path = str(tmp_path / "resnet.pth")
    torch.save(net.state_dict(), path)
    info, variables = load_backbone(path)
    x = np.random.default_rng(9).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = apply(resnet.TORCHVISION_WEIGHTS.module(info), variables, nhwc(x)).logits
    assert_close_to(got, want, relative=RESNET14_ERROR, what="ResNet logits vs PyTorch")


def test_training_checks_init_from_before_any_work(tmp_path):
    from configs import dogs
    from wrna_jax.train import train_and_evaluate

    config = dogs.get_config()
    config.init_from = str(tmp_path / "missing_weights")
    config.dataset.data_dir = str(tmp_path / "no_data_here")
    with pytest.raises(FileNotFoundError, match="download.pytorch.org/models/wide_resnet50_2"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "no_data_here").exists()
