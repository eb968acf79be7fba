"""The backbone interface and registry.

A backbone is one file: a Flax module derived from `Backbone` and a builder registered under the
name configs use (`model.backbone`), optionally with a `PretrainedWeights` hook that converts
PyTorch state dicts for `config.init_from`. `wrna_jax.models` imports every module of the package,
so a new file registers itself:

    @register_backbone("my_net")
    def build(model: ml_collections.ConfigDict, dtype, bn_group_size) -> MyNet:
        return MyNet(num_classes=model.num_classes, dtype=dtype, bn_group_size=bn_group_size)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from wrna_jax.registry import Registry


class Backbone(nn.Module):
    """What the attention network needs of a backbone.

    `__call__(x, train)` returns a `BackboneOutput`: the feature maps attention may attach to (by
    name), the pooled features its gates read, and the backbone's own classifier logits.
    `attach_points` maps an attach-point scheme to the names of those maps, deepest first:
    'deepest' (paper and master branch) is required, 'rectify' (dev branch) optional (it defaults
    to 'deepest'). `own_bn_points` names the attach points whose modules read the map through a
    BatchNorm-ReLU of their own (none by default). `classifier` names the module holding the
    classifier, which trains at the head learning rate and is left out when pretrained weights
    are loaded.
    """

    num_classes: int
    dtype: Any = jnp.float32
    bn_group_size: int | None = None

    classifier: ClassVar[str] = "fc"

    @property
    def attach_points(self) -> Mapping[str, tuple[str, ...]]:
        raise NotImplementedError(f"{type(self).__name__} does not define its attach points.")

    @property
    def own_bn_points(self) -> tuple[str, ...]:
        return ()


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """How a backbone reads PyTorch weights (`config.init_from`, `python -m wrna_jax.convert`).

    convert: (state dict, what to call it in errors) -> (description, {'params', 'batch_stats'}) of
      the network in the file, its own classifier included; the description is a JSON-able dict
      naming what varies (depth, width, classes, ...); a state dict of another network raises
      ValueError.
    module: a description -> the Flax module those variables fit (to restore a converted copy).
    mismatch: (description, model config) -> why they differ, or '' when the config builds the
      same backbone (the classifier aside).
    input_shape: an image shape the module accepts, for abstract shapes.
    instructions: how to obtain the weights, for the error of a missing file.
    """

    convert: Callable[[Mapping[str, np.ndarray], str], tuple[dict[str, Any], dict[str, Any]]]
    module: Callable[[Mapping[str, Any]], nn.Module]
    mismatch: Callable[[Mapping[str, Any], Mapping[str, Any]], str]
    input_shape: tuple[int, ...]
    instructions: str = ""


@dataclasses.dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone. `stn`: whether it can sit behind a spatial transformer."""

    name: str
    build: Callable[[Mapping[str, Any], Any, int | None], Backbone]
    pretrained: PretrainedWeights | None = None
    stn: bool = False


BACKBONES: Registry[BackboneEntry] = Registry("model.backbone")


def register_backbone(name: str, *, pretrained: PretrainedWeights | None = None, stn: bool = False) -> Callable:
    """Decorator registering `build(model_config, dtype, bn_group_size) -> Backbone` as `name`."""

    def register(build: Callable) -> Callable:
        BACKBONES.add(name, BackboneEntry(name, build, pretrained, stn))
        return build

    return register


def backbone_entry(name: str) -> BackboneEntry:
    """The registered backbone `name`, or an error listing the registered ones."""
    return BACKBONES[name]
