"""Strict conversion of a PyTorch state dict into Flax variables, and the layout changes.

A conversion is a list of `Rule`s, one per Flax variable: which state-dict keys (with the
shapes they must have) produce it, and how. `convert` checks that every variable of the model
has a rule, that every key a rule reads exists with the expected shape and that every key of
the file is used (`num_batches_tracked` counters and the released code's constant buffers
aside); any problem raises one `WeightMismatchError` listing all missing, unexpected and
mis-shaped keys.

Layouts: PyTorch convolutions are OIHW and Flax's HWIO; PyTorch dense weights are (out, in)
and Flax's (in, out); a dense layer reading a flattened conv map sees PyTorch's (C, H, W) order
where our NHWC models flatten (H, W, C), so its input axis is reordered too.
"""

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import flax
import jax
import numpy as np

from wrna_jax.errors import BadFileError

Path = tuple[str, ...]
# Keys that carry no parameter: BatchNorm's update counters (PyTorch >= 0.4).
IGNORED_SUFFIXES = (".num_batches_tracked",)
MAX_LISTED = 25


class WeightMismatchError(BadFileError):
    """A state dict that does not fit the model; lists every missing, unexpected and mis-shaped key."""

    def __init__(self, what: str, missing: Sequence[str], unexpected: Sequence[str],
                 misshaped: Sequence[str], hint: str = ""):
        self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
        lines = [f"{what} does not match the model: {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected and {len(self.misshaped)} mis-shaped keys."]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("mis-shaped", self.misshaped)):
            if keys:
                more = f" ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
                lines.append(f"  {label}: " + ", ".join(keys[:MAX_LISTED]) + more)
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


@dataclasses.dataclass(frozen=True)
class Rule:
    """Flax variable `target` (collection first) = fn(*arrays of `sources`).

    sources: (state-dict key, the shape it must have) pairs; fn: their arrays -> the variable.
    """

    target: Path
    sources: tuple[tuple[str, tuple[int, ...]], ...]
    fn: Callable[..., np.ndarray]


def flat_shapes(variables: Mapping[str, Any]) -> dict[Path, tuple[int, ...]]:
    """{(collection, module, ..., name): shape} of a (possibly abstract) variables tree."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def abstract_variables(module: Any, input_shape: Sequence[int]) -> dict[Path, tuple[int, ...]]:
    """Variable shapes of `module` for an input of shape (1, *input_shape), computed abstractly."""
    x = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x)
    return flat_shapes(variables)


def convert(state_dict: Mapping[str, np.ndarray], rules: Iterable[Rule],
            template: Mapping[Path, tuple[int, ...]], *, what: str = "The state dict",
            ignored: Callable[[str], bool] = lambda key: False, hint: str = "") -> dict[str, Any]:
    """Applies `rules` strictly; returns nested Flax variables {'params': ..., 'batch_stats': ...}."""
    rules = list(rules)
    targets = {rule.target for rule in rules}
    unmapped = sorted("/".join(p) for p in set(template) - targets)
    if unmapped or len(targets) != len(rules) or targets - set(template):
        raise ValueError("This model has variables the state dict layout does not provide: "
                         + (", ".join(unmapped[:MAX_LISTED]) or "(duplicate or unknown targets)")
                         + ". Build the model with the architecture the file was saved from.")
    missing, misshaped, used = [], [], set()
    for rule in rules:
        for key, shape in rule.sources:
            used.add(key)
            if key not in state_dict:
                missing.append(key)
            elif tuple(state_dict[key].shape) != tuple(shape):
                misshaped.append(f"{key} {tuple(state_dict[key].shape)} (expected {tuple(shape)})")
    unexpected = [k for k in state_dict if k not in used and not k.endswith(IGNORED_SUFFIXES)
                  and not ignored(k)]
    if missing or unexpected or misshaped:
        raise WeightMismatchError(what, sorted(set(missing)), sorted(unexpected), misshaped, hint)
    flat = {}
    for rule in rules:
        value = np.asarray(rule.fn(*(np.asarray(state_dict[k], np.float32) for k, _ in rule.sources)),
                           np.float32)
        if value.shape != tuple(template[rule.target]):
            raise AssertionError(f"Conversion bug: {'/'.join(rule.target)} came out {value.shape}, "
                                 f"the model needs {template[rule.target]}.")
        flat[rule.target] = value
    return flax.traverse_util.unflatten_dict(flat)


# Layout changes ---------------------------------------------------------------------------

def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch OIHW -> Flax HWIO."""
    return np.transpose(weight, (2, 3, 1, 0))


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch (out, in) -> Flax (in, out)."""
    return np.transpose(weight)


def flattened_dense_kernel(weight: np.ndarray, channels: int, height: int, width: int) -> np.ndarray:
    """(out, C*H*W) reading a (C, H, W)-flattened map -> (H*W*C, out) reading an (H, W, C) one."""
    out = weight.shape[0]
    return weight.reshape(out, channels, height, width).transpose(2, 3, 1, 0).reshape(-1, out)


def identity(x: np.ndarray) -> np.ndarray:
    return x


def torch_shape(leaf: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a Flax conv/dense kernel (or a vector) of `shape`."""
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return shape


# Flax leaf name -> (PyTorch parameter name, layout change).
LEAVES = {
    ("params", "scale"): ("weight", identity),
    ("params", "bias"): ("bias", identity),
    ("batch_stats", "mean"): ("running_mean", identity),
    ("batch_stats", "var"): ("running_var", identity),
}


def leaf_rule(target: Path, shape: tuple[int, ...], module_key: str) -> Rule:
    """The one-to-one rule for a conv/dense/BatchNorm variable of the PyTorch module `module_key`."""
    collection, leaf = target[0], target[-1]
    if (collection, leaf) == ("params", "kernel"):
        fn = conv_kernel if len(shape) == 4 else dense_kernel
        return Rule(target, ((f"{module_key}.weight", torch_shape(leaf, shape)),), fn)
    name, fn = LEAVES[(collection, leaf)]
    return Rule(target, ((f"{module_key}.{name}", shape),), fn)
