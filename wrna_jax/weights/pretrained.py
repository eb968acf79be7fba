"""ImageNet ResNet weights (torchvision / timm) for fine-tuning: convert, store, initialise from.

`convert_resnet(state_dict)` turns a torchvision or timm `wide_resnet50_2` / `resnet50` (or any
bottleneck ResNet) state dict into the variables of our `ResNet`, strictly. `save_backbone`
stores them as an orbax checkpoint directory (`python -m wrna_jax.convert SRC DST` does both),
and `apply_init_from(state, config)` puts them into a fresh training state: the backbone's
parameters and BatchNorm statistics come from the file, the classifier (`fc`, sized for the
dataset) and the attention modules and gates keep their fresh initialisation, and the optimiser
state is re-initialised from the new parameters. `config.init_from` may name a converted
directory or, converting on the fly, a `.safetensors` file (numpy only) or a `.pth` file
(needs torch).
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Mapping

import flax
import jax
import ml_collections
import numpy as np
from absl import logging

from wrna_jax.models.resnet import STAGE_SIZES, ResNet
from wrna_jax.weights import files, mapping

TORCHVISION_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"
METADATA = "wrna_backbone.json"
VARIABLES = "variables"
FORMAT = "wrna_jax.resnet_backbone.v1"


def download_instructions(path: str) -> str:
    return (f"Download torchvision's ImageNet WRN-50-2 ({TORCHVISION_URL}) and convert it once:\n"
            f"  wget {TORCHVISION_URL}\n"
            f"  python -m wrna_jax.convert wide_resnet50_2-95faca4d.pth {path}\n"
            "(reading .pth needs torch; a timm wide_resnet50_2 model.safetensors converts without it), "
            "Or train from scratch: --config.init_from='' (init_from=None in a config file).")


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """What a converted backbone is: stage sizes, width factor and its original classes."""

    stage_sizes: tuple[int, ...]
    width: int
    num_classes: int
    source: str = ""

    def module(self) -> ResNet:
        return ResNet(self.num_classes, self.stage_sizes, self.width)


def convert_resnet(state_dict: Mapping[str, np.ndarray], source: str = "") -> tuple[BackboneInfo, dict[str, Any]]:
    """(info, {'params', 'batch_stats'}) of our `ResNet` from a torchvision/timm state dict."""
    layout = mapping.infer_resnet_layout(state_dict)
    info = BackboneInfo(layout.stage_sizes, layout.width, layout.num_classes, source)
    template = mapping.abstract_variables(info.module(), (224, 224, 3))
    variables = mapping.convert(
        state_dict, mapping.resnet_rules(template), template, what=source or "The state dict",
        hint="Expected a torchvision/timm bottleneck ResNet state dict (e.g. wide_resnet50_2); "
             "released painless-attention checkpoints load with wrna_jax.weights.load_released.")
    return info, variables


def check_destination(directory: str, force: bool = False) -> str:
    """The absolute path of `directory` if a converted backbone may be written there, else an error."""
    directory = os.path.abspath(os.path.expanduser(directory))
    if os.path.exists(directory):
        if not force:
            raise FileExistsError(f"{directory} already exists; pass --force to replace it.")
        if not os.path.isfile(os.path.join(directory, METADATA)):
            raise FileExistsError(f"{directory} exists and is not a converted backbone (no {METADATA}); "
                                  "refusing to replace it: choose another destination.")
    return directory


def save_backbone(info: BackboneInfo, variables: Mapping[str, Any], directory: str, *,
                  force: bool = False) -> None:
    """Writes `directory/` (orbax variables + wrna_backbone.json), atomically.

    Refuses to replace an existing path unless `force`, and even then only a directory this
    function wrote (it has wrna_backbone.json), so it never deletes anything else.
    """
    import orbax.checkpoint as ocp
    directory = check_destination(directory, force)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".converting-", dir=parent)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.join(staging, VARIABLES), dict(variables))
        with open(os.path.join(staging, METADATA), "w") as f:
            json.dump(dict(format=FORMAT, **dataclasses.asdict(info)), f, indent=2)
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.rename(staging, directory)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def read_info(directory: str) -> BackboneInfo:
    """The metadata of a converted backbone directory, or a clear error."""
    path = os.path.join(directory, METADATA)
    if not os.path.isfile(path):
        raise ValueError(f"{directory} is not a converted backbone (no {METADATA}). "
                         f"Convert the weights with: python -m wrna_jax.convert SRC {directory}")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {meta.get('format')!r} (expected {FORMAT!r}); "
                         "convert the weights again with python -m wrna_jax.convert.")
    return BackboneInfo(tuple(meta["stage_sizes"]), int(meta["width"]), int(meta["num_classes"]),
                        meta.get("source", ""))


def load_backbone(path: str) -> tuple[BackboneInfo, dict[str, Any]]:
    """(info, numpy variables) from a converted directory, a .safetensors or a .pth file."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        return convert_resnet(files.load_state_dict(path), source=path)
    import orbax.checkpoint as ocp
    info = read_info(path)
    template = mapping.abstract_variables(info.module(), (224, 224, 3))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = flax.traverse_util.unflatten_dict(
        {p: jax.ShapeDtypeStruct(s, np.float32, sharding=device) for p, s in template.items()})
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.join(path, VARIABLES), abstract)
    return info, jax.tree.map(np.asarray, restored)


def check_init_from(config: ml_collections.ConfigDict) -> None:
    """Fails fast (before data or compilation) when `config.init_from` cannot be used."""
    path = config.get("init_from")
    if not path:
        return
    if config.model.backbone != "imagenet_resnet":
        raise ValueError(f"config.init_from={path!r} initialises an 'imagenet_resnet' backbone, but "
                         f"model.backbone={config.model.backbone!r}: unset it (--config.init_from='').")
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise FileNotFoundError(f"config.init_from={path!r}: {full} does not exist.\n"
                                + download_instructions(path))
    if os.path.isdir(full):
        info = read_info(full)
        _check_matches(info, config)
    else:
        kind = files.file_kind(full)
        if kind == "torch" and not files.torch_available():
            raise ImportError(f"config.init_from={path!r} is a PyTorch file and torch is not installed: "
                              f"convert it once where torch is (python -m wrna_jax.convert {path} DST) "
                              "and point init_from at DST.")


def _check_matches(info: BackboneInfo, config: ml_collections.ConfigDict) -> None:
    depth, width = config.model.depth, config.model.width
    if STAGE_SIZES.get(depth) != tuple(info.stage_sizes) or width != info.width:
        names = {v: k for k, v in STAGE_SIZES.items()}
        raise ValueError(f"config.init_from holds a ResNet-{names.get(tuple(info.stage_sizes), info.stage_sizes)} "
                         f"of width {info.width}, but the config builds model.depth={depth}, "
                         f"model.width={width}: make them agree.")


def backbone_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The backbone variables of `config.init_from`, checked against the config's ResNet."""
    info, variables = load_backbone(config.init_from)
    _check_matches(info, config)
    return variables


def apply_init_from(state: Any, config: ml_collections.ConfigDict) -> Any:
    """`state` with the backbone (minus its classifier) and its BatchNorm statistics from
    `config.init_from`, and the optimiser state re-initialised. A no-op without init_from."""
    if not config.get("init_from"):
        return state
    loaded = backbone_variables(config)
    classifier = "fc"
    params = flax.traverse_util.flatten_dict(flax.core.unfreeze(state.params))
    stats = flax.traverse_util.flatten_dict(flax.core.unfreeze(state.batch_stats))
    new = {"params": params, "batch_stats": stats}
    replaced = 0
    for collection, tree in loaded.items():
        for path, value in flax.traverse_util.flatten_dict(tree).items():
            if path[0] == classifier:
                continue
            target = ("backbone", *path)
            old = new[collection].get(target)
            if old is None or old.shape != value.shape:
                raise ValueError(f"config.init_from: {collection}/{'/'.join(path)} "
                                 f"{value.shape} does not fit the model "
                                 f"({None if old is None else old.shape}).")
            new[collection][target] = jax.device_put(value.astype(old.dtype), old.sharding)
            replaced += 1
    expected = sum(1 for tree in (params, stats) for p in tree
                   if p[0] == "backbone" and p[1] != classifier)
    if replaced != expected:
        raise ValueError(f"config.init_from filled {replaced} of the backbone's {expected} arrays.")
    params = flax.traverse_util.unflatten_dict(new["params"])
    sharding = jax.tree.leaves(params)[0].sharding
    opt_state = jax.jit(state.tx.init, out_shardings=sharding)(params)
    count = sum(int(np.prod(v.shape)) for p, v in new["params"].items()
                if p[0] == "backbone" and p[1] != classifier)
    logging.info("Initialised the backbone from %s: %d arrays, %d parameters; the classifier (%s), "
                 "attention modules and gates start fresh.", config.init_from, replaced, count, classifier)
    return state.replace(params=params, batch_stats=flax.traverse_util.unflatten_dict(new["batch_stats"]),
                         opt_state=opt_state)
