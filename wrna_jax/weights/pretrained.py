"""Pretrained backbones for fine-tuning: convert PyTorch weights, store them, initialise from them.

The conversion is the backbone's own (`PretrainedWeights`, registered with it in wrna_jax/models):
`convert_backbone(state_dict, name)` gives its variables and a description (for a ResNet: stage
sizes, width, classes). `save_backbone` stores them as an orbax checkpoint directory
(`python -m wrna_jax.convert SRC DST` does both), and `apply_init_from(state, config)` puts them
into a fresh training state: the backbone's parameters and BatchNorm statistics come from the
file, its classifier (sized for the dataset), the attention modules and the gates keep their
fresh initialisation, and the optimiser state is re-initialised from the new parameters.
`config.init_from` may name a converted directory or, converting on the fly, a `.safetensors`
file (numpy only) or a `.pth` file (needs torch).
"""

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

from wrna_jax import distributed
from wrna_jax.errors import ConfigError, MissingDependencyError, MissingFileError, WorkdirError
from wrna_jax.models import backbone_entry, create_backbone
from wrna_jax.models.registry import PretrainedWeights
from wrna_jax.models import state_dicts as mapping
from wrna_jax.weights import files, hub

METADATA = "wrna_backbone.json"
VARIABLES = "variables"
FORMAT = "wrna_jax.backbone.v2"
_V1 = "wrna_jax.resnet_backbone.v1"  # directories written before backbones had hooks: ResNets


def hook(backbone: str) -> PretrainedWeights:
    """The registered backbone's conversion of PyTorch weights, or a clear error."""
    entry = backbone_entry(backbone)
    if entry.pretrained is None:
        raise ConfigError(f"The {backbone!r} backbone has no pretrained weights to initialise from: "
                          "unset config.init_from (--config.init_from='').")
    return entry.pretrained


def convert_backbone(state_dict: Mapping[str, np.ndarray], backbone: str = "imagenet_resnet",
                     source: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(description, {'params', 'batch_stats'}) of `backbone` from a PyTorch state dict."""
    description, variables = hook(backbone).convert(state_dict, source or "The state dict")
    return {"backbone": backbone, **description, "source": source}, variables


def check_destination(directory: str, force: bool = False) -> str:
    """The absolute path of `directory` if a converted backbone may be written there, else an error."""
    directory = os.path.abspath(os.path.expanduser(directory))
    if os.path.exists(directory):
        if not force:
            raise WorkdirError(f"{directory} already exists; pass --force to replace it.")
        if not os.path.isfile(os.path.join(directory, METADATA)):
            raise WorkdirError(f"{directory} exists and is not a converted backbone (no {METADATA}); "
                               "refusing to replace it: choose another destination.")
    return directory


def save_backbone(description: Mapping[str, Any], variables: Mapping[str, Any], directory: str, *,
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
            json.dump(dict(format=FORMAT, **description), f, indent=2)
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.rename(staging, directory)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def read_description(directory: str) -> dict[str, Any]:
    """The description of a converted backbone directory, or a clear error."""
    path = os.path.join(directory, METADATA)
    if not os.path.isfile(path):
        raise ConfigError(f"{directory} is not a converted backbone (no {METADATA}). "
                          f"Convert the weights with: python -m wrna_jax.convert SRC {directory}")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") == _V1:
        meta = {**meta, "backbone": "imagenet_resnet"}
    elif meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: unknown format {meta.get('format')!r} (expected {FORMAT!r}); "
                          "convert the weights again with python -m wrna_jax.convert.")
    return {key: value for key, value in meta.items() if key != "format"}


def load_backbone(path: str, backbone: str = "imagenet_resnet") -> tuple[dict[str, Any], dict[str, Any]]:
    """(description, numpy variables) from a converted directory, a .safetensors or a .pth file."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        return convert_backbone(files.load_state_dict(path), backbone, source=path)
    import orbax.checkpoint as ocp
    description = read_description(path)
    weights = hook(description["backbone"])
    template = mapping.abstract_variables(weights.module(description), weights.input_shape)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = flax.traverse_util.unflatten_dict(
        {p: jax.ShapeDtypeStruct(s, np.float32, sharding=device) for p, s in template.items()})
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(os.path.join(path, VARIABLES), abstract)
    return description, jax.tree.map(np.asarray, restored)


def _check_matches(description: Mapping[str, Any], config: ml_collections.ConfigDict) -> None:
    if description["backbone"] != config.model.backbone:
        raise ConfigError(f"config.init_from holds a {description['backbone']!r} backbone, but the config "
                          f"builds model.backbone={config.model.backbone!r}: make them agree.")
    problem = hook(description["backbone"]).mismatch(description, config.model)
    if problem:
        raise ConfigError(f"config.init_from: {problem}: make them agree.")


def resolve_name(name: str, table: Mapping[str, hub.NamedWeights] | None = None, directory: str | None = None) -> str:
    """The converted directory of the named weights (`weights/hub.py`): from the cache, else
    downloaded, verified and converted into it."""
    weights = hub.lookup(name, hub.NAMED if table is None else table)
    root = directory or hub.cache_dir()
    converted = os.path.join(root, name.replace(":", "_").replace("/", "_"))
    if os.path.isfile(os.path.join(converted, METADATA)):
        return converted
    path = hub.download(weights, os.path.join(root, "downloads"))
    if files.file_kind(path) == "torch" and not files.torch_available():
        raise MissingFileError(f"Downloaded {path}, a PyTorch file; converting it needs torch once (pip install torch "
                               "--index-url https://download.pytorch.org/whl/cpu), or convert it where torch is "
                               f"(python -m wrna_jax.convert {path} {converted}) and copy {converted} here.")
    description, variables = convert_backbone(files.load_state_dict(path), weights.backbone, source=path)
    save_backbone(description, variables, converted, force=os.path.exists(converted))
    return converted


def local_path(init_from: str) -> str:
    """`init_from` itself, or for a name (`weights/hub.py`) the converted directory in the
    cache, downloaded and converted on first use (process 0 first)."""
    if not hub.is_name(init_from):
        return init_from
    with distributed.process_0_first(f"downloading {init_from}"):
        return resolve_name(init_from)


def check_init_from(config: ml_collections.ConfigDict) -> None:
    """Fails fast (before data or compilation) when `config.init_from` cannot be used; a named
    one is downloaded and converted here, once."""
    if not config.init_from:
        return
    path = local_path(config.init_from)
    weights = hook(config.model.backbone)
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        raise MissingFileError(f"config.init_from={path!r}: {full} does not exist.\n"
                               + weights.instructions.replace("DST", path)
                               + "\nOr train from scratch: --config.init_from='' (init_from=None in a config file).")
    if os.path.isdir(full):
        _check_matches(read_description(full), config)
    elif files.file_kind(full) == "torch" and not files.torch_available():
        raise MissingDependencyError(f"config.init_from={path!r} is a PyTorch file and torch is not installed: "
                                     f"convert it once where torch is (python -m wrna_jax.convert {path} DST) "
                                     "and point init_from at DST.")


def apply_init_from(state: Any, config: ml_collections.ConfigDict) -> Any:
    """`state` with the backbone (minus its classifier) and its BatchNorm statistics from
    `config.init_from`, and the optimiser state re-initialised. A no-op without init_from."""
    if not config.init_from:
        return state
    description, loaded = load_backbone(local_path(config.init_from), config.model.backbone)
    _check_matches(description, config)
    classifier = create_backbone(config.model).classifier
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
                raise ConfigError(f"config.init_from: {collection}/{'/'.join(path)} "
                                  f"{value.shape} does not fit the model "
                                  f"({None if old is None else old.shape}).")
            new[collection][target] = jax.device_put(value.astype(old.dtype), old.sharding)
            replaced += 1
    expected = sum(1 for tree in (params, stats) for p in tree
                   if p[0] == "backbone" and p[1] != classifier)
    if replaced != expected:
        raise ConfigError(f"config.init_from filled {replaced} of the backbone's {expected} arrays.")
    params = flax.traverse_util.unflatten_dict(new["params"])
    sharding = jax.tree.leaves(params)[0].sharding
    opt_state = jax.jit(state.tx.init, out_shardings=sharding)(params)
    count = sum(int(np.prod(v.shape)) for p, v in new["params"].items()
                if p[0] == "backbone" and p[1] != classifier)
    logging.info("Initialised the backbone from %s: %d arrays, %d parameters; the classifier (%s), "
                 "attention modules and gates start fresh.", config.init_from, replaced, count, classifier)
    return state.replace(params=params, batch_stats=flax.traverse_util.unflatten_dict(new["batch_stats"]),
                         opt_state=opt_state)
