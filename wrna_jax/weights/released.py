"""Import of checkpoints saved by the authors' released PyTorch code into our `released` preset.

The released code saves `model.state_dict()` of two networks (SPEC section 5):

- the WRN-50-2 attention network: backbone `conv1`, `bn1`, `group{0-3}.layer.{i}.{conv,bn}{1-3}`,
  `...shortcut_{conv,bn}`, `linear` (torchvision names `layer{1-4}.{i}`, `downsample`, `fc` are
  accepted too), modules `att{1-3}` after group1-3 (= our `att_layer2..4`), backbone gate
  `output_gate.{gate,bn}`;
- the cluttered-MNIST network: `bn1..bn7`, `conv1..conv5` (bias-free in the released code: our
  conv biases are set to zero; biases in the file are used), `fc1`, `fc2`, modules
  `att1..att5` after conv1..conv5 (= our `att_conv1..5`), backbone gate `g_out` (a bias-free
  dense layer `g_out.weight` with BatchNorm `g_bn`, or a gate module `g_out.{gate,bn}`).

Each attention module `attN`: `conv_reduce` + `conv_bn` (C -> C/2), `atthead.conv` (3x3 mask
conv) and `atthead.bn` (BatchNorm of the attended maps), and per head k `outhead_k.F` (flatten
and project; PyTorch flattens (C, H, W)), `outhead_k.bn`, `outhead_k.out` (class dense),
`outhead_k.gate.gate` + `outhead_k.gate.bn`. Head k goes to index k of our stacked per-head
parameters. `num_batches_tracked` and the constant `atthead.diag` buffers are skipped.

Masks: the released AttentionHead normalises the mask logits with ONE softmax over all K heads
and H*W positions of an image (`softmax(conv(x).view(b, K*H*W), 1)`), not one softmax per head as
SPEC section 1 describes; `released_config` therefore selects `attention.mask_fn='joint_softmax'`
so the imported network computes what the original computed (identical for AW = 1). Pass
`mask_fn='softmax'` for checkpoints of a code version with per-head softmax.

    model, variables, config = load_released("model.pytorch")
    out = model.apply(variables, images_nhwc, train=False)   # out.log_probs
"""

import re
from typing import Any, Mapping

import ml_collections
import numpy as np

from wrna_jax.models import create_model
from wrna_jax.models.resnet import STAGE_SIZES
from wrna_jax.weights import files, mapping
from wrna_jax.weights.mapping import Path, Rule

MNIST_INPUT_SHAPE = (40, 40, 1)
GATE_LAYOUTS = (("output_gate.gate.weight", "output_gate.bn"),
                ("g_out.gate.weight", "g_out.bn"),
                ("g_out.weight", "g_bn"))


def _ignored(key: str) -> bool:
    return bool(re.fullmatch(r"att\d+\.atthead\.diag", key))


def _attention_modules(state_dict: Mapping[str, np.ndarray]) -> dict[int, int]:
    """{module index N of `attN`: its number of heads}."""
    heads: dict[int, int] = {}
    for key in state_dict:
        match = re.match(r"att(\d+)\.outhead_(\d+)\.", key)
        if match:
            heads[int(match[1])] = max(heads.get(int(match[1]), 0), int(match[2]) + 1)
        elif re.match(r"att(\d+)\.", key):
            heads.setdefault(int(re.match(r"att(\d+)\.", key)[1]), 0)
    return heads


def backbone_kind(state_dict: Mapping[str, np.ndarray]) -> tuple[str, str]:
    """('mnist_cnn' | 'imagenet_resnet', ResNet naming) of a released state dict."""
    if "conv5.weight" in state_dict and "fc1.weight" in state_dict:
        return "mnist_cnn", ""
    if "group0.layer.0.conv1.weight" in state_dict:
        return "imagenet_resnet", "released"
    if "layer1.0.conv1.weight" in state_dict:
        return "imagenet_resnet", "torchvision"
    raise ValueError("This is not a released painless-attention state dict: it has neither the "
                     "cluttered-MNIST keys (conv5.weight, fc1.weight) nor a WRN backbone "
                     f"(group0.layer.0.conv1.weight or layer1.0.conv1.weight). First keys: "
                     f"{', '.join(list(state_dict)[:5])}.")


def released_config(state_dict: Mapping[str, np.ndarray],
                    config: ml_collections.ConfigDict | None = None, *,
                    mask_fn: str = "joint_softmax") -> ml_collections.ConfigDict:
    """A copy of `config` (default: just the `model` and `attention` sections) with the model and
    attention settings of the checkpoint: backbone, classes, AD and AW from its keys, and the
    `released` preset with gates."""
    config = ml_collections.ConfigDict(config if config is not None
                                       else dict(model=dict(dtype="float32"), attention={}))
    kind, naming = backbone_kind(state_dict)
    modules = _attention_modules(state_dict)
    widths = set(modules.values())
    if len(widths) > 1 or 0 in widths:
        raise ValueError(f"The attention modules have different numbers of heads {modules}: every "
                         "module must have outhead_0..outhead_{AW-1}; the file may be truncated.")
    depth, width = len(modules), (widths.pop() if widths else 1)
    deepest = 5 if kind == "mnist_cnn" else 3   # att5 after conv5; att3 after group3 (layer4)
    expected = set(range(deepest - depth + 1, deepest + 1))
    if set(modules) != expected:
        raise ValueError(f"Attention modules {sorted(modules)} are not the deepest {depth} of this "
                         f"network (expected att{sorted(expected)}): it cannot be imported.")
    model = dict(backbone=kind)
    if kind == "mnist_cnn":
        model["num_classes"] = int(state_dict["fc2.weight"].shape[0])
    else:
        layout = mapping.infer_resnet_layout(state_dict, naming)
        depths = {v: k for k, v in STAGE_SIZES.items()}
        if layout.stage_sizes not in depths:
            raise ValueError(f"ResNet stage sizes {layout.stage_sizes} are not ResNet-50/101/152.")
        model.update(depth=depths[layout.stage_sizes], width=layout.width,
                     num_classes=layout.num_classes)
    config.model.update(model)
    config.attention.update(preset="released", depth=depth, width=width, gates=True, mask_fn=mask_fn,
                            reduction=None, mask_kernel=None, channel_reduction=None,
                            attended_bn=None, shared_projection=None, gate_bn=None)
    return config


def _stack(*arrays: np.ndarray) -> np.ndarray:
    return np.stack(arrays)


def _attention_rules(template: Mapping[Path, tuple[int, ...]], ours: str, theirs: str,
                     heads: int) -> list[Rule]:
    """Rules for our module `ours` (e.g. 'att_layer4') from the released module `theirs` ('att3')."""
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
                raise ValueError(f"{ours}: a non-square {features // channels}-position map cannot be imported.")
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


def _mnist_rules(template: Mapping[Path, tuple[int, ...]],
                 state_dict: Mapping[str, np.ndarray]) -> list[Rule]:
    rules = []
    for target, shape in template.items():
        if target[1] != "backbone":
            continue
        module = ".".join(target[2:-1])
        if target[2] == "fc1" and target[-1] == "kernel":
            channels = template[("params", "backbone", "conv5", "kernel")][-1]
            size = int(round(np.sqrt(shape[0] // channels)))
            rules.append(Rule(target, (("fc1.weight", (shape[1], shape[0])),),
                              lambda w, c=channels, s=size: mapping.flattened_dense_kernel(w, c, s, s)))
        elif re.fullmatch(r"conv\d", target[2]) and target[-1] == "bias" and f"{module}.bias" not in state_dict:
            rules.append(Rule(target, (), lambda s=shape: np.zeros(s, np.float32)))
        else:
            rules.append(mapping.leaf_rule(target, shape, module))
    return rules


def _gate_rules(template: Mapping[Path, tuple[int, ...]], state_dict: Mapping[str, np.ndarray],
                kind: str) -> list[Rule]:
    candidates = GATE_LAYOUTS[:1] if kind == "imagenet_resnet" else GATE_LAYOUTS[1:]
    weight, bn = next((c for c in candidates if c[0] in state_dict), candidates[-1])
    rules = []
    for target, shape in template.items():
        if target[1] == "output_gate":
            key = weight[: -len(".weight")] if target[2] == "gate" else bn
            rules.append(mapping.leaf_rule(target, shape, key))
    return rules


def convert_released(state_dict: Mapping[str, np.ndarray],
                     config: ml_collections.ConfigDict) -> tuple[Any, dict[str, Any]]:
    """(model, variables) of `config` (see `released_config`) filled from a released state dict.

    Strict: raises `WeightMismatchError` listing missing, unexpected and mis-shaped keys.
    """
    kind, naming = backbone_kind(state_dict)
    model = create_model(config)
    if kind == "mnist_cnn":
        input_shape = MNIST_INPUT_SHAPE
    else:
        size = _resnet_input_size(state_dict, model.spec.width)
        input_shape = (size, size, 3)
    template = mapping.abstract_variables(model, input_shape)
    if kind == "mnist_cnn":
        rules = _mnist_rules(template, state_dict)
        theirs = {f"conv{i}": f"att{i}" for i in range(1, 6)}
    else:
        rules = mapping.resnet_rules(template, naming, prefix=("backbone",))
        theirs = {f"layer{i + 1}": f"att{i}" for i in range(4)}
    for point in model.backbone.attach_points[: model.spec.depth]:
        rules += _attention_rules(template, f"att_{point}", theirs[point], model.spec.width)
    rules += _gate_rules(template, state_dict, kind)
    variables = mapping.convert(
        state_dict, rules, template, what="The released checkpoint", ignored=_ignored,
        hint="Build the config with wrna_jax.weights.released_config(state_dict) so the model "
             "matches the checkpoint's architecture.")
    return model, variables


def _resnet_input_size(state_dict: Mapping[str, np.ndarray], heads: int) -> int:
    """Image side the WRN attention checkpoint was trained at (its layer4 map is side / 32)."""
    key = "att3.outhead_0.F.weight"
    if heads < 1 or key not in state_dict:
        return 224
    channels, features = state_dict[key].shape
    return int(round(np.sqrt(features // channels))) * 32


def load_released(path: str, config: ml_collections.ConfigDict | None = None, *,
                  mask_fn: str = "joint_softmax") -> tuple[Any, dict[str, Any], ml_collections.ConfigDict]:
    """(model, variables, config) from a released `.pth` / `.safetensors` state dict.

    `config` supplies everything but the model and attention settings, which come from the
    file (`released_config`). Inputs are NHWC: (B, 224, 224, 3) ImageNet-normalised images
    for the WRN network, (B, 40, 40, 1) for cluttered MNIST.
    """
    state_dict = files.load_state_dict(path)
    config = released_config(state_dict, config, mask_fn=mask_fn)
    model, variables = convert_released(state_dict, config)
    return model, variables, config
