"""Pretrained weights by name (`config.init_from='torchvision:wide_resnet50_2.IMAGENET1K_V1'`):
the table of published files and their download into the cache, verified (the conversion of a
download, once, is `pretrained.resolve_name`).

The cache is $WRNA_JAX_CACHE, default ~/.cache/wrna_jax: `downloads/<file>` holds the file as
published and `<name>/` the converted backbone (`pretrained.save_backbone`). torchvision's file
names carry the first hex digits of the file's SHA-256 (`wide_resnet50_2-95faca4d.pth`), as
torch.hub checks them: a download whose digest does not start with them is refused, and so is
one shorter than its Content-Length (an interrupted transfer); neither leaves anything in the
cache (the bytes go to a temporary file, renamed only when verified). Offline, the error says
where to put the file by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping

from tqdm import tqdm

from wrna_jax.errors import BadFileError, MissingFileError

PREFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.[a-z]+$")


@dataclasses.dataclass(frozen=True)
class NamedWeights:
    """A published backbone: where it is, and what it is (backbone, ResNet depth and width)."""

    url: str
    backbone: str = "imagenet_resnet"
    depth: int = 50
    width: int = 1

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_TORCHVISION = "https://download.pytorch.org/models/"
NAMED: dict[str, NamedWeights] = {
    "torchvision:wide_resnet50_2.IMAGENET1K_V1": NamedWeights(_TORCHVISION + "wide_resnet50_2-95faca4d.pth", width=2),
    "torchvision:wide_resnet50_2.IMAGENET1K_V2": NamedWeights(_TORCHVISION + "wide_resnet50_2-9ba9bcbe.pth", width=2),
    "torchvision:resnet50.IMAGENET1K_V1": NamedWeights(_TORCHVISION + "resnet50-0676ba61.pth"),
    "torchvision:resnet50.IMAGENET1K_V2": NamedWeights(_TORCHVISION + "resnet50-11ad3fa6.pth"),
}


def is_name(init_from: str | None, table: Mapping[str, NamedWeights] = NAMED) -> bool:
    """Whether `init_from` names published weights rather than a path."""
    return bool(init_from) and (init_from in table or init_from.split(":", 1)[0] == "torchvision")


def cache_dir() -> str:
    return os.path.abspath(os.path.expanduser(os.environ.get("WRNA_JAX_CACHE") or "~/.cache/wrna_jax"))


def lookup(name: str, table: Mapping[str, NamedWeights] = NAMED) -> NamedWeights:
    if name not in table:
        raise MissingFileError(f"config.init_from={name!r} is not a known name; known: {', '.join(sorted(table))} "
                               "(or a path to a converted directory, a .pth or a .safetensors file).")
    return table[name]


def download(weights: NamedWeights, directory: str, timeout: float = 60.0) -> str:
    """The verified file of `weights` in `directory` (downloaded unless already there)."""
    path = os.path.join(directory, weights.filename)
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    expected = PREFIX_RE.search(weights.filename)
    digest = hashlib.sha256()
    handle, partial = tempfile.mkstemp(prefix=f".{weights.filename}.", suffix=".partial", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                response = urllib.request.urlopen(weights.url, timeout=timeout)
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise MissingFileError(
                    f"Could not download {weights.url} ({reason}). Download it where there is internet access "
                    f"and put it at {path} (it is then verified and converted here), or convert it yourself "
                    "(python -m wrna_jax.convert) and set config.init_from to the result.") from None
            with response:
                size = int(response.headers.get("Content-Length") or 0) or None
                received = 0
                with tqdm(total=size, unit="B", unit_scale=True, desc=f"download {weights.filename}") as bar:
                    while True:
                        try:
                            chunk = response.read(1 << 20)
                        except (OSError, http.client.HTTPException) as error:  # e.g. IncompleteRead, a reset
                            raise BadFileError(f"The download of {weights.url} was interrupted after {received:,} "
                                               f"bytes ({type(error).__name__}); nothing was cached: run again.") from None
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        if size is not None and received != size:
            raise BadFileError(f"The download of {weights.url} was interrupted: {received:,} of {size:,} bytes; "
                               "nothing was cached: run again.")
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise BadFileError(f"The download of {weights.url} is corrupted: its SHA-256 {digest.hexdigest()[:16]}... "
                               f"does not start with {expected.group(1)} (from the file name); nothing was cached: "
                               "run again, or check what serves that address.")
        os.replace(partial, path)
        return path
    finally:
        if os.path.exists(partial):
            os.remove(partial)
