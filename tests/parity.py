"""Parity with the authors' PyTorch code, step by step: shared by tests/test_parity.py and
tests/golden/make_golden.py (which writes the golden files with tests/torch_reference.py).

A setting is a network (the master branch's cluttered-MNIST CNN at AD = 1, 2, 5, or the dev
branch's modules and gate layer on WRN-50-2-shaped feature maps at the four released
fine-grained settings: dogs, cars and food as the code of commit 0b671d5 that ran them, with the
regulariser on the full masks; birds as the branch's last commit 288ec61, on 2x2-pooled masks;
or the CIFAR attention WRN of commit ea7d4af, a WRN-10-1 on 8x8 images, whole), its weights and
its batches. Weights and batches are drawn here with
numpy from a fixed seed (weights as the authors initialise them: kaiming normal over fan_in,
PyTorch's defaults for biases and master's conv_reduce; BatchNorm affine parameters and running
statistics randomised so that they matter), in PyTorch's names and layouts, so the golden files
need not store them. A fixture holds what the PyTorch network computes from them: eval-mode
log-probabilities, the train-mode regulariser and loss, the gradients at the start, the
parameters and running statistics after one SGD step from the start (no momentum yet), and after
a second step from a second, generated state: the same weights with a momentum buffer, on a second
batch. Both steps start from the same state in both implementations (comparing a step that
started from two slightly different step-1 results would measure how fast two trajectories
diverge, not the step). Large tensors are stored as `PROJECTIONS` random projections
(a fixed Gaussian matrix per tensor: an error vector e shows up in each projection with size
~||e||) and their norm; everything is stored in our layout (converted by our importer).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
PROJECTIONS = 8
SEED = 20260301

MNIST_SETTINGS = {f"mnist_ad{ad}": dict(depth=ad, heads=2, batch=8) for ad in (1, 2, 5)}
# (classes, heads, gate normalisation, output rule, head lr) of the released logs (dev branch), and
# the regulariser's mask pooling of the commit each setting follows (0b671d5: 1, 288ec61: 2).
DEV_SETTINGS = {
    "dev_dogs": dict(classes=120, heads=2, gate_fn="softmax", output="all", lr=0.005, pool=1),
    "dev_birds": dict(classes=200, heads=2, gate_fn="sigmoid", output="50", lr=0.1, pool=2),
    "dev_cars": dict(classes=196, heads=4, gate_fn="softmax", output="all", lr=0.2, pool=1),
    "dev_food": dict(classes=100, heads=2, gate_fn="softmax", output="all", lr=0.2, pool=1),
}
# WRN-50-2's layer1..layer3 channels and pooled width; the maps of a 56-pixel image (7 x 7 at
# layer2, an odd size, so the regulariser's 2x2 pooling drops a row and a column).
DEV_CHANNELS = {"layer1": 256, "layer2": 512, "layer3": 1024}
DEV_SIZES = {"layer1": 14, "layer2": 7, "layer3": 4}
DEV_BATCH = 3
MNIST_MAPS = {1: (32, 18), 2: (64, 8), 3: (128, 6), 4: (128, 6), 5: (128, 4)}
# The CIFAR attention network of commit ea7d4af (models/wide_resnet_cifar_painless.py,
# modules/attention.py, train_cifar_attention.py), as small as it goes: WRN-10-1, AD = 3.
CIFAR_SETTINGS = {"cifar_ea7d4af": dict(depth=10, width=1, classes=10, heads=2, batch=4, size=8)}


def _rng(name: str, *tags: Any) -> np.random.Generator:
    digest = hashlib.sha256(repr((SEED, name, *tags)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# Weights as the authors initialise them, in PyTorch's names -------------------------------------

def _kaiming(rng, shape) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _uniform(rng, shape, fan_in) -> np.ndarray:
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def _bn(sd, rng, name, channels) -> None:
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    sd[f"{name}.bias"] = rng.normal(0, 0.1, channels).astype(np.float32)
    sd[f"{name}.running_mean"] = rng.normal(0, 0.1, channels).astype(np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)


def _linear(sd, rng, name, out, inp, bias=True) -> None:
    sd[f"{name}.weight"] = _kaiming(rng, (out, inp))
    if bias:
        sd[f"{name}.bias"] = _uniform(rng, (out,), inp)


def mnist_state_dict(setting: str) -> dict[str, np.ndarray]:
    """The master branch's AttentionNet (models/attention_net.py at 4b8ed88) at the setting's AD."""
    depth, heads = MNIST_SETTINGS[setting]["depth"], MNIST_SETTINGS[setting]["heads"]
    rng = _rng(setting, "weights")
    sd: dict[str, np.ndarray] = {}
    _bn(sd, rng, "bn1", 1)
    for i, (out, inp, k) in enumerate([(32, 1, 5), (64, 32, 3), (128, 64, 3), (128, 128, 3), (128, 128, 3)], 1):
        sd[f"conv{i}.weight"] = _kaiming(rng, (out, inp, k, k))
        _bn(sd, rng, f"bn{i + 1}", out)
    _linear(sd, rng, "fc1", 256, 128 * 16)
    _bn(sd, rng, "bn7", 256)
    _linear(sd, rng, "fc2", 10, 256)
    for i in range(6 - depth, 6):
        channels, size = MNIST_MAPS[i]
        c, p = channels // 2, f"att{i}"
        sd[f"{p}.conv_reduce.weight"] = _uniform(rng, (c, channels, 1, 1), channels)  # PyTorch's default
        _bn(sd, rng, f"{p}.conv_bn", c)
        sd[f"{p}.atthead.conv.weight"] = _kaiming(rng, (heads, c, 3, 3))
        _bn(sd, rng, f"{p}.atthead.bn", c)
        sd[f"{p}.atthead.diag"] = (1 - np.eye(heads)).reshape(1, heads, heads).astype(np.float32)
        for k in range(heads):
            h = f"{p}.outhead_{k}"
            _linear(sd, rng, f"{h}.F", c, c * size * size, bias=False)
            _bn(sd, rng, f"{h}.bn", c)
            _linear(sd, rng, f"{h}.out", 10, c)
            _linear(sd, rng, f"{h}.gate.gate", 1, c, bias=False)
            _bn(sd, rng, f"{h}.gate.bn", 1)
    _linear(sd, rng, "g_out.gate", 1, 256, bias=False)
    _bn(sd, rng, "g_out.bn", 1)
    return sd


def dev_state_dict(setting: str) -> dict[str, np.ndarray]:
    """The dev branch's attention modules att0..att2, gate layer and classifier (models/
    wide_resnet_attention.py and modules/attention.py, the same at 0b671d5 and 288ec61 but for
    the regulariser), without the backbone."""
    s = DEV_SETTINGS[setting]
    rng = _rng(setting, "weights")
    sd: dict[str, np.ndarray] = {}
    for i, layer in enumerate(("layer1", "layer2", "layer3")):
        c = DEV_CHANNELS[layer]
        sd[f"att{i}.att_head.conv.weight"] = _kaiming(rng, (s["heads"], c, 3, 3))
        sd[f"att{i}.att_head.diag"] = (1 - np.eye(s["heads"])).reshape(1, s["heads"], s["heads"]).astype(np.float32)
        sd[f"att{i}.out_head.conv.weight"] = _kaiming(rng, (s["heads"] * s["classes"], c, 3, 3))
        sd[f"att{i}.score.conv.weight"] = _kaiming(rng, (s["heads"], c, 3, 3))
    gates = 3 + (s["output"] == "all")
    sd["output_gate.gates.weight"] = _kaiming(rng, (gates, 2048))
    _bn(sd, rng, "output_gate.bn", gates)
    _linear(sd, rng, "linear", s["classes"], 2048)
    return sd


def _widths(s: Mapping[str, Any]) -> list[int]:
    return [16 * s["width"] * 2 ** g for g in range(3)]


def cifar_state_dict(setting: str) -> dict[str, np.ndarray]:
    """WideResNetAttention of models/wide_resnet_cifar_painless.py at ea7d4af: `conv0`,
    `group_{g}.block_{i}.{bn0,conv0,bn1,conv1,conv_reduce}`, `bn`, `classifier`, modules
    `att{g}` with `pre_bn{g}` (created for every attended group, read for g < 2), `output_gate`."""
    s = CIFAR_SETTINGS[setting]
    rng = _rng(setting, "weights")
    sd: dict[str, np.ndarray] = {"conv0.weight": _kaiming(rng, (16, 3, 3, 3))}
    inp = 16
    for g, out in enumerate(_widths(s)):
        for i in range((s["depth"] - 4) // 6):
            ni, p = inp if i == 0 else out, f"group_{g}.block_{i}"
            _bn(sd, rng, f"{p}.bn0", ni)
            sd[f"{p}.conv0.weight"] = _kaiming(rng, (out, ni, 3, 3))
            _bn(sd, rng, f"{p}.bn1", out)
            sd[f"{p}.conv1.weight"] = _kaiming(rng, (out, out, 3, 3))
            if ni != out:
                sd[f"{p}.conv_reduce.weight"] = _kaiming(rng, (out, ni, 1, 1))
        inp = out
    _bn(sd, rng, "bn", inp)
    _linear(sd, rng, "classifier", s["classes"], inp)
    heads = s["heads"]
    for g, c in enumerate(_widths(s)):
        sd[f"att{g}.att_head.conv.weight"] = _kaiming(rng, (heads, c, 3, 3))
        sd[f"att{g}.att_head.diag"] = (1 - np.eye(heads)).reshape(1, heads, heads).astype(np.float32)
        sd[f"att{g}.out_head.conv.weight"] = _kaiming(rng, (heads * s["classes"], c, 3, 3))
        sd[f"att{g}.score.conv.weight"] = _kaiming(rng, (heads, c, 3, 3))
        _bn(sd, rng, f"pre_bn{g}", c)
    sd["output_gate.gates.weight"] = _kaiming(rng, (4, inp))
    _bn(sd, rng, "output_gate.bn", 4)
    return sd


def cifar_batches(setting: str) -> list[dict[str, np.ndarray]]:
    """Two batches of normalised-image-like inputs, NHWC, with labels."""
    s, rng = CIFAR_SETTINGS[setting], _rng(setting, "batches")
    return [{"image": rng.standard_normal((s["batch"], s["size"], s["size"], 3)).astype(np.float32),
             "label": rng.integers(0, s["classes"], s["batch"]).astype(np.int32)} for _ in range(2)]


def cifar_config(setting: str):
    """configs/cifar10.py's default recipe (ea7d4af) at the setting's size, float32, the batch
    as one BatchNorm group."""
    from configs import cifar10

    s = CIFAR_SETTINGS[setting]
    config = cifar10.get_config("authors_protocol")
    config.model.update(depth=s["depth"], width=s["width"], num_classes=s["classes"], dtype="float32",
                        bn_group_size=None)
    config.attention.width = s["heads"]
    config.batch_size = s["batch"]
    config.schedule.kind = "constant"
    return config


def cifar_converter(setting: str) -> Callable[[Mapping[str, np.ndarray]], dict]:
    """ea7d4af's state dict (or gradients in its names) -> our variables. Their gates' rows follow
    their outputs, att0, att1, att2, classifier; ours the hypotheses, backbone, group3, group2,
    group1: the rows are reversed. `pre_bn2`, which their forward pass never reads, is left out."""
    s = CIFAR_SETTINGS[setting]
    names = {"conv0": "backbone/conv1", "bn": "backbone/bn", "classifier": "backbone/fc",
             "output_gate.gates": "output_gate/gate", "output_gate.bn": "output_gate/bn"}
    for g in range(3):
        names[f"att{g}.att_head.conv"] = f"att_group{g + 1}/mask_conv"
        names[f"att{g}.out_head.conv"] = f"att_group{g + 1}/output_conv"
        names[f"att{g}.score.conv"] = f"att_group{g + 1}/score_conv"
        if g < 2:
            names[f"pre_bn{g}"] = f"pre_bn_group{g + 1}"
        for i in range((s["depth"] - 4) // 6):
            p, q = f"group_{g}.block_{i}", f"backbone/group{g + 1}_{i}"
            names.update({f"{p}.bn0": f"{q}/bn1", f"{p}.conv0": f"{q}/conv1", f"{p}.bn1": f"{q}/bn2",
                          f"{p}.conv1": f"{q}/conv2", f"{p}.conv_reduce": f"{q}/shortcut"})
    leaves = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}

    def convert(sd):
        out: dict[str, dict] = {"params": {}, "batch_stats": {}}
        for key, value in sd.items():
            module, leaf = key.rsplit(".", 1)
            if module not in names or leaf == "num_batches_tracked":
                continue
            value = np.asarray(value, np.float32)
            if module.startswith("output_gate"):
                value = value[::-1]
            if value.ndim == 4:
                collection, name, value = "params", "kernel", value.transpose(2, 3, 1, 0)
            elif value.ndim == 2:
                collection, name, value = "params", "kernel", value.T
            elif names[module].startswith("backbone/fc") or leaf != "weight" and leaf not in leaves:
                collection, name = "params", leaf
            else:
                collection, name = leaves[leaf]
            out[collection][f"{names[module]}/{name}"] = jnp.asarray(np.ascontiguousarray(value))
        return {c: flax.traverse_util.unflatten_dict(v, sep="/") for c, v in out.items()}

    return convert


def momentum_buffers(setting: str, sd: Mapping[str, np.ndarray], parameters: list[str]) -> dict[str, np.ndarray]:
    """The second step's SGD momentum buffer, in PyTorch's names: 0.1 x each tensor's spread."""
    rng = _rng(setting, "momentum")
    out = {}
    for key in sorted(parameters):
        value = sd[key]
        spread = float(np.std(value)) if value.size > 1 else 0.1
        out[key] = (0.1 * (spread or 0.1) * rng.standard_normal(value.shape)).astype(np.float32)
    return out


def parameter_keys(setting: str) -> list[str]:
    """The trainable tensors of the setting's state dict (not running statistics or buffers)."""
    skip = (".running_mean", ".running_var", ".num_batches_tracked", ".diag")
    return [k for k in state_dict(setting) if not k.endswith(skip)]


def mnist_batches(setting: str) -> list[dict[str, np.ndarray]]:
    """Two batches of canvas-like images in [0, 1], NHWC, with labels."""
    batch, rng = MNIST_SETTINGS[setting]["batch"], _rng(setting, "batches")
    return [{"image": rng.random((batch, 40, 40, 1), np.float32),
             "label": rng.integers(0, 10, batch).astype(np.int32)} for _ in range(2)]


def dev_batches(setting: str) -> list[dict[str, np.ndarray]]:
    """Two batches of non-negative (post-ReLU) feature maps, NHWC, pooled features and labels."""
    rng = _rng(setting, "batches")
    out = []
    for _ in range(2):
        batch = {layer: np.abs(rng.standard_normal((DEV_BATCH, DEV_SIZES[layer], DEV_SIZES[layer], c))
                               ).astype(np.float32) for layer, c in DEV_CHANNELS.items()}
        batch["pooled"] = np.abs(rng.standard_normal((DEV_BATCH, 2048))).astype(np.float32)
        batch["label"] = rng.integers(0, DEV_SETTINGS[setting]["classes"], DEV_BATCH).astype(np.int32)
        out.append(batch)
    return out


# Our models and their conversion from the state dicts ------------------------------------------

class FeatureBackbone(nn.Module):
    """Stands in for WRN-50-2 in the dev-branch settings: its input is the feature maps and
    pooled features themselves; its classifier (`fc`, the dev code's `linear`) reads the pooled."""

    num_classes: int
    dtype: Any = jnp.float32
    bn_group_size: int | None = None

    classifier = "fc"

    @property
    def attach_points(self) -> dict[str, tuple[str, ...]]:
        return {"deepest": ("layer3", "layer2", "layer1")}

    @nn.compact
    def __call__(self, x: Mapping[str, jax.Array], train: bool = False):
        from wrna_jax.models.layers import dense
        from wrna_jax.models.outputs import BackboneOutput

        pooled = x["pooled"]
        logits = dense(self.num_classes, pooled.shape[-1], dtype=self.dtype, name="fc")(pooled)
        return BackboneOutput(features={k: x[k] for k in DEV_CHANNELS}, pooled=pooled, logits=logits)


def mnist_config(setting: str):
    """configs/cluttered_mnist.py (the master branch's optimiser) at the setting's AD and AW."""
    from configs import cluttered_mnist

    config = cluttered_mnist.get_config()
    config.attention.update(depth=MNIST_SETTINGS[setting]["depth"], width=MNIST_SETTINGS[setting]["heads"])
    config.batch_size = MNIST_SETTINGS[setting]["batch"]
    config.schedule.kind = "constant"
    return config


def dev_config(setting: str):
    """A fine-grained config's optimiser (configs/fine_grained.py's released recipe) with the
    setting's attention."""
    from configs import default

    s = DEV_SETTINGS[setting]
    config = default.get_config()
    config.model.update(num_classes=s["classes"])
    config.attention.update(preset="attend_rectify", depth=3, width=s["heads"], gate_fn=s["gate_fn"],
                            output=s["output"], regularizer_pool=s["pool"])
    config.optimizer.update(learning_rate=0.1 * s["lr"], head_lr_multiplier=10.0, momentum=0.9, nesterov=True,
                            weight_decay=1e-4)
    config.schedule.kind = "constant"
    config.batch_size = DEV_BATCH
    return config


def model_and_converter(setting: str) -> tuple[Any, Any, Callable[[Mapping[str, np.ndarray]], dict]]:
    """(config, our model, state dict -> our variables) for a setting."""
    from wrna_jax.models import create_model
    from wrna_jax.models.factory import attention_spec
    from wrna_jax.models.network import AttentionNetwork
    from wrna_jax.models import state_dicts as mapping
    from wrna_jax.weights import released

    if setting in CIFAR_SETTINGS:
        config = cifar_config(setting)
        return config, create_model(config), cifar_converter(setting)
    if setting in MNIST_SETTINGS:
        config = mnist_config(setting)
        model = create_model(config)
        return config, model, lambda sd: released.convert_released(sd, config)[1]
    config = dev_config(setting)
    backbone = FeatureBackbone(config.model.num_classes)
    model = AttentionNetwork(backbone, attention_spec(config.attention, backbone), config.model.num_classes)
    example = {layer: jax.ShapeDtypeStruct((1, DEV_SIZES[layer], DEV_SIZES[layer], c), jnp.float32)
               for layer, c in DEV_CHANNELS.items()}
    example["pooled"] = jax.ShapeDtypeStruct((1, 2048), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), example)
    template = mapping.flat_shapes(variables)
    rules = [mapping.leaf_rule(t, shape, "linear") for t, shape in template.items() if t[1] == "backbone"]
    theirs = {"layer1": "att0", "layer2": "att1", "layer3": "att2"}
    for point in model.attached:
        rules += released.rectify_rules(template, f"att_{point}", theirs[point])

    def convert(sd):
        gate = released.gate_rules(template, sd, "imagenet_resnet", "dev", 3)
        return mapping.convert(sd, rules + gate, template, ignored=released._ignored)

    return config, model, convert


def flat(tree: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": np.asarray(v, np.float64)
            for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}


def projection(name: str, value: np.ndarray) -> np.ndarray:
    """(PROJECTIONS,) Gaussian projections of `value`, fixed per tensor name: projection k is the
    dot product of the k-th of PROJECTIONS interleaved slices of the flattened tensor with a
    Gaussian vector of norm ~1, so each element is in one projection and an error e changes the
    projections by ~||e|| together (n random numbers per tensor, not PROJECTIONS x n)."""
    value = np.asarray(value, np.float64).ravel()
    size = -(-value.size // PROJECTIONS) * PROJECTIONS
    slices = np.pad(value, (0, size - value.size)).reshape(-1, PROJECTIONS).T
    weights = _rng(name, "projection").standard_normal(slices.shape, dtype=np.float32)
    return np.einsum("kn,kn->k", weights, slices) / np.sqrt(slices.shape[1])


def summarise(prefix: str, tensors: Mapping[str, np.ndarray], full_below: int = 1024) -> dict[str, np.ndarray]:
    """Small tensors as they are, large ones as projections and norm (keys '<prefix>:<name>',
    '...:proj', '...:norm')."""
    out = {}
    for name, value in tensors.items():
        value = np.asarray(value, np.float64)
        if value.size <= full_below:
            out[f"{prefix}:{name}"] = value
        else:
            out[f"{prefix}:{name}:proj"] = projection(name, value)
            out[f"{prefix}:{name}:norm"] = np.asarray(np.linalg.norm(value))
    return out


def our_fixtures(setting: str, state_dict: Mapping[str, np.ndarray], batch_sets: list[list]) -> list[dict]:
    """What our implementation computes for the setting (the keys of a golden file), for each
    list of two batches in `batch_sets` (the same programs, compiled once)."""
    from wrna_jax import steps
    from wrna_jax.models import regularizer_weight
    from wrna_jax.optim import create_optimizer

    config, model, convert = model_and_converter(setting)
    variables = convert(state_dict)
    tx = create_optimizer(config, 1, model.backbone.classifier)
    weight = regularizer_weight(config.attention)
    evaluate = jax.jit(model.apply)
    grad_fn = jax.jit(lambda p, s, b: steps.loss_and_grads(p, s, b, jnp.zeros(2, jnp.uint32), model=model,
                                                           regularizer_weight=weight))

    @jax.jit
    def update(grads, opt_state, params):  # what `steps.train_step` does after the gradients
        updates, _ = tx.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates)
    start = flat(variables["params"], "params")
    momentum = convert({**state_dict, **momentum_buffers(setting, state_dict, parameter_keys(setting))})["params"]
    fixtures = []
    for batches in batch_sets:
        first = training_batch(batches[0])
        out = {"eval:log_probs": np.asarray(evaluate(variables, first["image"]).log_probs, np.float64)}
        for i, batch in enumerate(batches, start=1):
            grads, batch_stats, metrics = grad_fn(variables["params"], variables["batch_stats"], training_batch(batch))
            if i == 1:
                out["train:loss"] = np.asarray(metrics["loss"], np.float64)
                out["train:regularizer"] = np.asarray(metrics["regularizer"], np.float64)
                out.update(summarise("grad", flat(grads, "params")))
            opt_state = tx.init(variables["params"])
            if i == 2:  # the second state: the same weights with a momentum buffer
                opt_state = jax.tree.map(lambda s: s._replace(trace=momentum) if isinstance(s, optax.TraceState) else s,
                                         opt_state, is_leaf=lambda s: isinstance(s, optax.TraceState))
            params = update(grads, opt_state, variables["params"])
            moved = {name: value - start[name] for name, value in flat(params, "params").items()}
            out.update(summarise(f"step{i}", moved))
            out.update(summarise(f"step{i}", flat(batch_stats, "batch_stats")))
        fixtures.append(out)
    return fixtures


def training_batch(batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """{'image': the model's input, 'label': ...} for `steps`."""
    image = batch["image"] if "image" in batch else {k: batch[k] for k in (*DEV_CHANNELS, "pooled")}
    return {"image": image, "label": batch["label"]}


def reordered(batches: list[dict[str, np.ndarray]], seed: int) -> list[dict[str, np.ndarray]]:
    """The same batches with their examples in another order (tests/numerics.py)."""
    rng = np.random.default_rng(seed)
    out = []
    for batch in batches:
        order = rng.permutation(len(batch["label"]))
        while len(order) > 1 and np.all(order == np.arange(len(order))):
            order = rng.permutation(len(order))
        out.append({key: value[order] for key, value in batch.items()})
    return out


def state_dict(setting: str) -> dict[str, np.ndarray]:
    if setting in CIFAR_SETTINGS:
        return cifar_state_dict(setting)
    return mnist_state_dict(setting) if setting in MNIST_SETTINGS else dev_state_dict(setting)


def batches(setting: str) -> list[dict[str, np.ndarray]]:
    if setting in CIFAR_SETTINGS:
        return cifar_batches(setting)
    return mnist_batches(setting) if setting in MNIST_SETTINGS else dev_batches(setting)


def weights_checksum(sd: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-key sums of the generated weights (sorted keys): the golden file records them, so a
    change of the generator is caught rather than compared against stale fixtures."""
    return np.asarray([float(np.sum(sd[k], dtype=np.float64)) for k in sorted(sd)])


def golden_path(setting: str) -> str:
    return os.path.join(GOLDEN_DIR, f"{setting}.npz")
