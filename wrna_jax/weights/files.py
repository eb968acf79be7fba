"""Reading PyTorch state dicts as `{key: numpy array}`, from `.safetensors` or `.pth` files.

`.safetensors` needs only numpy (the `safetensors` package). `.pth` needs torch and is read
with `torch.load(weights_only=True)`, which refuses to unpickle anything but tensors and
plain containers, so a checkpoint file cannot run code. Checkpoints saved from
`torch.nn.DataParallel` have every key prefixed with `module.`; the prefix is removed.
"""

import os
from typing import Mapping

import numpy as np

from wrna_jax.errors import BadFileError, MissingDependencyError, MissingFileError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".pytorch", ".bin", ".tar")
DATA_PARALLEL_PREFIX = "module."


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def file_kind(path: str) -> str:
    """'safetensors' or 'torch' from the file name, or a ValueError naming the accepted ones."""
    name = path.lower()
    if name.endswith(SAFETENSORS_SUFFIXES):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    raise BadFileError(f"{path}: unknown weight file type; use a .safetensors file (timm hub, or "
                       f"safetensors.torch.save_file) or a PyTorch state dict ({', '.join(TORCH_SUFFIXES)}).")


def _strip_data_parallel(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if state_dict and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state_dict):
        return {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state_dict.items()}
    return state_dict


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise BadFileError(f"{path} is not a readable .safetensors file ({e}). It may be truncated or "
                           "corrupt: download it again.") from e


def _load_torch(path: str) -> dict[str, np.ndarray]:
    if not torch_available():
        raise MissingDependencyError(f"Reading {path} needs PyTorch, which is not installed. Install the CPU "
                                     "build (pip install torch --index-url https://download.pytorch.org/whl/cpu), "
                                     "or use a .safetensors copy of the weights (timm hub), or convert on a "
                                     "machine with torch: python -m wrna_jax.convert SRC DST.")
    import pickle

    import torch
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadFileError(f"{path} holds Python objects other than tensors, which are not loaded "
                           f"(weights_only=True): save `model.state_dict()` instead of the model. ({e})") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise BadFileError(f"{path} is not a readable PyTorch file ({e}). It may be truncated or "
                           "corrupt: download or save it again.") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
    if not isinstance(loaded, Mapping):
        raise BadFileError(f"{path} holds a {type(loaded).__name__}, not a state dict "
                           "(a mapping from names to tensors): save `model.state_dict()`.")
    out = {}
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise BadFileError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                               "save `model.state_dict()`.")
        value = value.detach().cpu()
        out[key] = (value.float() if value.is_floating_point() else value).numpy()
    return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """The state dict in `path` (.safetensors or .pth) as numpy arrays, `module.` prefix removed."""
    path = os.path.expanduser(path)
    kind = file_kind(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: no such weight file.")
    state_dict = _load_safetensors(path) if kind == "safetensors" else _load_torch(path)
    if not state_dict:
        raise BadFileError(f"{path} holds no tensors.")
    return _strip_data_parallel(dict(state_dict))


def save_safetensors(state_dict: Mapping[str, np.ndarray], path: str) -> None:
    """Writes a `{key: array}` state dict as .safetensors (readable by both numpy and torch)."""
    from safetensors.numpy import save_file
    save_file({k: np.asarray(v, order="C") for k, v in state_dict.items()}, os.path.expanduser(path))
