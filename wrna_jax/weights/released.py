"""Import of checkpoints saved by the authors' PyTorch code (docs/method.md, section 5).

Both generations save `model.state_dict()`:

* master branch (4b8ed88; our `released` preset):
  - the WRN-50-2 attention network: backbone `conv1`, `bn1`, `group{0-3}.layer.{i}.{conv,bn}{1-3}`,
    `...shortcut_{conv,bn}`, `linear` (torchvision names `layer{1-4}.{i}`, `downsample`, `fc` are
    accepted too), modules `att{1-3}` after group1-3 (= our `att_layer2..4`), backbone gate
    `output_gate.{gate,bn}`;
  - the cluttered-MNIST network: `bn1..bn7`, `conv1..conv5` (bias-free; checkpoints of older code
    with conv biases import into a model with `model.conv_bias=True`), `fc1`, `fc2`, modules
    `att1..att5` after conv1..conv5 (= our `att_conv1..5`), backbone gate `g_out` (a bias-free
    dense layer `g_out.weight` with BatchNorm `g_bn`, or a gate module `g_out.{gate,bn}`).
  Each module `attN`: `conv_reduce` + `conv_bn` (C -> C/2), `atthead.conv` (3x3 mask conv) and
  `atthead.bn` (BatchNorm of the attended maps), and per head k `outhead_k.F` (flatten and
  project; PyTorch flattens (C, H, W)), `outhead_k.bn`, `outhead_k.out` (class dense),
  `outhead_k.gate.gate` + `outhead_k.gate.bn`. Head k goes to index k of our stacked per-head
  parameters. The masks are one softmax per head (`mask_fn='softmax'`, 4b8ed88 and later);
  checkpoints of the code up to c88aeb1 normalised all heads with one softmax: import them with
  `mask_fn='joint_softmax'`.
* dev branch (288ec61; our `attend_rectify` preset), the WRN-50-2 network: the same backbone,
  modules `att{0,1,2}` on layer1..layer3 with `att_head.conv` (masks), `out_head.conv` (K*N
  per-position logits, head-major) and `score.conv`, and one gate layer `output_gate.gates`
  (G x 2048, rows in the order of the modules from layer1 up, then the backbone's classifier when
  G = AD + 1, i.e. `attention_output='all'`; G = AD is '50') with `output_gate.bn`. The gate
  normalisation (softmax or sigmoid: the logs' `attention_type`) is not in the weights: pass
  `gate_fn`.

`num_batches_tracked` counters and the constant `diag` buffers are skipped.

    model, variables, config = load_released("model.pytorch")
    out = model.apply(variables, images_nhwc, train=False)   # out.log_probs
"""

import re
from typing import Any, Mapping

import ml_collections
import numpy as np

from wrna_jax.errors import BadFileError
from wrna_jax.models import create_model, resnet
from wrna_jax.models import state_dicts as mapping
from wrna_jax.models.state_dicts import Path, Rule
from wrna_jax.weights import files

MNIST_INPUT_SHAPE = (40, 40, 1)
GATE_LAYOUTS = (("output_gate.gate.weight", "output_gate.bn"),
                ("g_out.gate.weight", "g_out.bn"),
                ("g_out.weight", "g_bn"))
DEV_GATE = ("output_gate.gates.weight", "output_gate.bn")
# The dev branch's att{i} sits on layer{i + 1}; the master branch's on layer{i + 1} too (att1..att3).
RESNET_MODULE_LAYER = {i: f"layer{i + 1}" for i in range(4)}


def _ignored(key: str) -> bool:
    return bool(re.fullmatch(r"att\d+\.(atthead|att_head)\.diag", key))


def branch(state_dict: Mapping[str, np.ndarray]) -> str:
    """'dev' when the checkpoint has the dev branch's modules, else 'master'."""
    return "dev" if any(re.match(r"att\d+\.att_head\.", key) for key in state_dict) else "master"


def _modules(state_dict: Mapping[str, np.ndarray]) -> dict[int, int]:
    """{module index N of `attN`: its number of heads}."""
    heads: dict[int, int] = {}
    for key, value in state_dict.items():
        match = re.match(r"att(\d+)\.", key)
        if not match:
            continue
        index = int(match[1])
        head = re.match(r"att\d+\.outhead_(\d+)\.", key)
        if head:
            heads[index] = max(heads.get(index, 0), int(head[1]) + 1)
        elif re.fullmatch(r"att\d+\.att_head\.conv\.weight", key):
            heads[index] = int(value.shape[0])
        else:
            heads.setdefault(index, 0)
    return heads


def backbone_kind(state_dict: Mapping[str, np.ndarray]) -> tuple[str, str]:
    """('mnist_cnn' | 'imagenet_resnet', ResNet naming) of a released state dict."""
    if "conv5.weight" in state_dict and "fc1.weight" in state_dict:
        return "mnist_cnn", ""
    if "group0.layer.0.conv1.weight" in state_dict:
        return "imagenet_resnet", "released"
    if "layer1.0.conv1.weight" in state_dict:
        return "imagenet_resnet", "torchvision"
    raise BadFileError("This is not a released painless-attention state dict: it has neither the "
                       "cluttered-MNIST keys (conv5.weight, fc1.weight) nor a WRN backbone "
                       f"(group0.layer.0.conv1.weight or layer1.0.conv1.weight). First keys: "
                       f"{', '.join(list(state_dict)[:5])}.")


def _base_config() -> ml_collections.ConfigDict:
    """Every model and attention field `create_model` reads (configs/default.py's defaults)."""
    return ml_collections.ConfigDict(dict(
        model=dict(backbone="mnist_cnn", num_classes=10, depth=50, width=2, dropout=0.0, layout="zagoruyko",
                   dtype="float32", bn_group_size=None, stn=False, conv_bias=False, bn_scale_init=None),
        attention=dict(preset="released", depth=0, width=1, gates=True, regularizer_weight=None,
                       **{key: None for key in ("mask_fn", "reduction", "mask_kernel", "channel_reduction",
                                                "attended_bn", "shared_projection", "gate_bn", "gate_fn",
                                                "output", "regularizer_norm", "regularizer_pool")})))


def released_config(state_dict: Mapping[str, np.ndarray],
                    config: ml_collections.ConfigDict | None = None, *, mask_fn: str = "softmax",
                    gate_fn: str = "softmax") -> ml_collections.ConfigDict:
    """A copy of `config` (default: just the `model` and `attention` sections) with the model and
    attention settings of the checkpoint: backbone, classes, preset, AD, AW and the output rule
    from its keys; `mask_fn` (master: 'softmax' per head, or 'joint_softmax' for code up to
    c88aeb1) and `gate_fn` (dev: 'softmax' or 'sigmoid') from the caller."""
    config = ml_collections.ConfigDict(config if config is not None else _base_config())
    kind, naming = backbone_kind(state_dict)
    generation = branch(state_dict)
    modules = _modules(state_dict)
    widths = set(modules.values())
    if len(widths) > 1 or 0 in widths:
        raise BadFileError(f"The attention modules have different numbers of heads {modules}: every "
                           "module must have all its heads; the file may be truncated.")
    depth, width = len(modules), (widths.pop() if widths else 1)
    if generation == "dev":
        if kind != "imagenet_resnet":
            raise BadFileError("Only the dev branch's WRN-50-2 network can be imported (its CIFAR network "
                               "is not supported).")
        deepest = 2  # att2 on layer3; layer4 is never attended
    else:
        deepest = 5 if kind == "mnist_cnn" else 3  # att5 after conv5; att3 after group3 (layer4)
    expected = set(range(deepest - depth + 1, deepest + 1))
    if set(modules) != expected:
        raise BadFileError(f"Attention modules {sorted(modules)} are not the deepest {depth} of this "
                           f"network (expected att{sorted(expected)}): it cannot be imported.")
    model: dict[str, Any] = dict(backbone=kind)
    if kind == "mnist_cnn":
        model["num_classes"] = int(state_dict["fc2.weight"].shape[0])
        model["conv_bias"] = "conv1.bias" in state_dict
    else:
        layout = resnet.torch_layout(state_dict, naming)
        model.update(depth=layout.depth, width=layout.width, num_classes=layout.num_classes)
    config.model.update(model)
    attention = dict(depth=depth, width=width, mask_fn=mask_fn, reduction=None, mask_kernel=None,
                     channel_reduction=None, attended_bn=None, shared_projection=None, gate_bn=None,
                     gate_fn=None, output=None, regularizer_norm=None)
    if generation == "dev":
        gates = DEV_GATE[0] in state_dict
        rows = int(state_dict[DEV_GATE[0]].shape[0]) if gates else depth + 1
        if rows not in (depth, depth + 1):
            raise BadFileError(f"{DEV_GATE[0]} has {rows} rows for {depth} attention modules: expected {depth} "
                               f"(attention_output '50') or {depth + 1} ('all').")
        attention.update(preset="attend_rectify", gates=gates, gate_fn=gate_fn,
                         output="all" if rows == depth + 1 else "50")
    else:
        attention.update(preset="released", gates=True)  # the master code crashes without gates
    config.attention.update(attention)
    return config


def _stack(*arrays: np.ndarray) -> np.ndarray:
    return np.stack(arrays)


def painless_rules(template: Mapping[Path, tuple[int, ...]], ours: str, theirs: str,
                    heads: int) -> list[Rule]:
    """Rules for our master-branch module `ours` (e.g. 'att_layer4') from `theirs` ('att3')."""
    rules = []
    by_leaf = {path[2:]: (path, shape) for path, shape in template.items() if path[1] == ours}
    for sub, (target, shape) in by_leaf.items():
        collection, leaf = target[0], target[-1]
        head = [f"{theirs}.outhead_{k}" for k in range(heads)]
        if sub[0] in ("conv_reduce", "conv_bn", "mask_conv", "attended_bn"):
            module = {"mask_conv": "atthead.conv", "attended_bn": "atthead.bn"}.get(sub[0], sub[0])
            rules.append(mapping.leaf_rule(target, shape, f"{theirs}.{module}"))
        elif sub == ("projection",):
            _, features, channels = shape
            size = int(round(np.sqrt(features // channels)))
            if size * size * channels != features:
                raise BadFileError(f"{ours}: a non-square {features // channels}-position map cannot be imported.")
            rules.append(Rule(target, tuple((f"{h}.F.weight", (channels, features)) for h in head),
                              lambda *ws, c=channels, s=size: np.stack(
                                  [mapping.flattened_dense_kernel(w, c, s, s) for w in ws])))
        elif sub[0] == "projection_bn":
            name = mapping.LEAVES[(collection, leaf)][0]
            rules.append(Rule(target, tuple((f"{h}.bn.{name}", shape[1:]) for h in head), _stack))
        elif sub == ("head_kernel",):
            rules.append(Rule(target, tuple((f"{h}.out.weight", (shape[2], shape[1])) for h in head),
                              lambda *ws: np.stack([w.T for w in ws])))
        elif sub == ("head_bias",):
            rules.append(Rule(target, tuple((f"{h}.out.bias", shape[1:]) for h in head), _stack))
        elif sub == ("gate_kernel",):
            rules.append(Rule(target, tuple((f"{h}.gate.gate.weight", (1, shape[1])) for h in head),
                              lambda *ws: np.stack([w.T for w in ws])))
        elif sub[0] == "gate_bn":
            name = mapping.LEAVES[(collection, leaf)][0]
            rules.append(Rule(target, tuple((f"{h}.gate.bn.{name}", (1,)) for h in head),
                              lambda *vs: np.concatenate(vs)))
    return rules


def rectify_rules(template: Mapping[Path, tuple[int, ...]], ours: str, theirs: str) -> list[Rule]:
    """Rules for our dev-branch module `ours` (e.g. 'att_layer3') from `theirs` ('att2')."""
    names = {"mask_conv": "att_head.conv", "output_conv": "out_head.conv", "score_conv": "score.conv"}
    return [mapping.leaf_rule(target, shape, f"{theirs}.{names[target[2]]}")
            for target, shape in template.items() if target[1] == ours]


def _mnist_rules(template: Mapping[Path, tuple[int, ...]]) -> list[Rule]:
    rules = []
    for target, shape in template.items():
        if target[1] != "backbone":
            continue
        if target[2] == "fc1" and target[-1] == "kernel":
            channels = template[("params", "backbone", "conv5", "kernel")][-1]
            size = int(round(np.sqrt(shape[0] // channels)))
            rules.append(Rule(target, (("fc1.weight", (shape[1], shape[0])),),
                              lambda w, c=channels, s=size: mapping.flattened_dense_kernel(w, c, s, s)))
        else:
            rules.append(mapping.leaf_rule(target, shape, ".".join(target[2:-1])))
    return rules


def gate_rules(template: Mapping[Path, tuple[int, ...]], state_dict: Mapping[str, np.ndarray],
                kind: str, generation: str, depth: int) -> list[Rule]:
    if generation == "dev":
        weight, bn = DEV_GATE
        rows = state_dict[weight].shape[0] if weight in state_dict else depth + 1
        # Ours: [backbone ('all' only)] + modules from the deepest; theirs: modules from layer1 up,
        # then the backbone.
        order = ([depth] if rows == depth + 1 else []) + [depth - 1 - j for j in range(depth)]
    else:
        candidates = GATE_LAYOUTS[:1] if kind == "imagenet_resnet" else GATE_LAYOUTS[1:]
        weight, bn = next((c for c in candidates if c[0] in state_dict), candidates[-1])
        order = None
    rules = []
    for target, shape in template.items():
        if target[1] != "output_gate":
            continue
        rule = mapping.leaf_rule(target, shape, weight[: -len(".weight")] if target[2] == "gate" else bn)
        if order is not None:  # one output per gated hypothesis: permute them
            permute = (lambda w, fn=rule.fn: fn(w[order])) if target[-1] == "kernel" else (lambda v: v[order])
            rule = Rule(rule.target, rule.sources, permute)
        rules.append(rule)
    return rules


def convert_released(state_dict: Mapping[str, np.ndarray],
                     config: ml_collections.ConfigDict) -> tuple[Any, dict[str, Any]]:
    """(model, variables) of `config` (see `released_config`) filled from a released state dict.

    Strict: raises `WeightMismatchError` listing missing, unexpected and mis-shaped keys.
    """
    kind, naming = backbone_kind(state_dict)
    generation = branch(state_dict)
    model = create_model(config)
    if kind == "mnist_cnn":
        input_shape = MNIST_INPUT_SHAPE
    else:
        size = _resnet_input_size(state_dict, model.spec.width) if generation == "master" else 224
        input_shape = (size, size, 3)
    template = mapping.abstract_variables(model, input_shape)
    if kind == "mnist_cnn":
        rules = _mnist_rules(template)
        theirs = {f"conv{i}": f"att{i}" for i in range(1, 6)}
    else:
        rules = resnet.torch_rules(template, naming, prefix=("backbone",))
        theirs = {layer: f"att{i}" for i, layer in RESNET_MODULE_LAYER.items()}
    for point in model.attached:
        if generation == "dev":
            rules += rectify_rules(template, f"att_{point}", theirs[point])
        else:
            rules += painless_rules(template, f"att_{point}", theirs[point], model.spec.width)
    rules += gate_rules(template, state_dict, kind, generation, model.spec.depth)
    variables = mapping.convert(
        state_dict, rules, template, what="The released checkpoint", ignored=_ignored,
        hint="Build the config with wrna_jax.weights.released_config(state_dict) so the model "
             "matches the checkpoint's architecture.")
    return model, variables


def _resnet_input_size(state_dict: Mapping[str, np.ndarray], heads: int) -> int:
    """Image side the master WRN attention checkpoint was trained at (its layer4 map is side / 32)."""
    key = "att3.outhead_0.F.weight"
    if heads < 1 or key not in state_dict:
        return 224
    channels, features = state_dict[key].shape
    return int(round(np.sqrt(features // channels))) * 32


def load_released(path: str, config: ml_collections.ConfigDict | None = None, *, mask_fn: str = "softmax",
                  gate_fn: str = "softmax") -> tuple[Any, dict[str, Any], ml_collections.ConfigDict]:
    """(model, variables, config) from a released `.pth` / `.safetensors` state dict.

    `config` supplies everything but the model and attention settings, which come from the
    file (`released_config`). Inputs are NHWC: (B, 224, 224, 3) ImageNet-normalised images
    for the WRN networks, (B, 40, 40, 1) for cluttered MNIST.
    """
    state_dict = files.load_state_dict(path)
    config = released_config(state_dict, config, mask_fn=mask_fn, gate_fn=gate_fn)
    model, variables = convert_released(state_dict, config)
    return model, variables, config
