"""wrna_jax/weights/hub.py: pretrained weights by name, downloaded from a local HTTP server on
127.0.0.1: verified against the SHA-256 prefix of the file name, cached, converted once; a
corrupted or interrupted download is refused and leaves nothing in the cache."""

import hashlib
import http.server
import os
import threading

import jax
import numpy as np
import pytest

from test_weights import TINY_STAGES, resnet_state_dict
from wrna_jax.errors import BadFileError, MissingFileError
from wrna_jax.models import resnet
from wrna_jax.weights import convert_backbone, hub, load_backbone, pretrained, save_safetensors


class Server:
    """Serves `files[path] = (bytes, mode)`: mode 'ok', or 'cut' (announces the whole length,
    sends half, closes). Counts the requests."""

    def __init__(self):
        self.files, self.requests = {}, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body, mode = server.files[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[:len(body) // 2])
                self.wfile.flush()
                if mode == "cut":
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny bottleneck ResNet state dict as .safetensors bytes, named as torchvision names
    its files (<name>-<first 8 hex digits of the SHA-256>.safetensors)."""
    monkeypatch.setitem(resnet.STAGE_SIZES, 14, TINY_STAGES)
    state_dict = resnet_state_dict(TINY_STAGES, 1, 1000, np.random.default_rng(3))
    path = str(tmp_path / "tiny.safetensors")
    save_safetensors(state_dict, path)
    body = open(path, "rb").read()
    return state_dict, body, f"/tiny_resnet-{hashlib.sha256(body).hexdigest()[:8]}.safetensors"


def cached_files(directory):
    return sorted(os.path.relpath(os.path.join(d, f), directory) for d, _, fs in os.walk(directory) for f in fs)


def test_download_verify_convert_once_and_reuse(server, tiny, tmp_path, monkeypatch):
    state_dict, body, name = tiny
    server.files[name] = (body, "ok")
    monkeypatch.setenv("WRNA_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(hub.NAMED, "torchvision:tiny.TEST", hub.NamedWeights(server.url + name, depth=14))
    assert hub.is_name("torchvision:tiny.TEST") and not hub.is_name(str(tmp_path / "weights"))

    converted = pretrained.local_path("torchvision:tiny.TEST")
    assert converted == str(tmp_path / "cache" / "torchvision_tiny.TEST") and server.requests == 1
    _, restored = load_backbone(converted)
    _, direct = convert_backbone(state_dict)
    jax.tree.map(np.testing.assert_array_equal, restored, direct)
    assert open(tmp_path / "cache" / "downloads" / name[1:], "rb").read() == body
    assert pretrained.local_path("torchvision:tiny.TEST") == converted and server.requests == 1  # cached

    from configs import dogs

    config = dogs.get_config()
    config.model.update(depth=14, width=1)
    config.init_from = "torchvision:tiny.TEST"
    pretrained.check_init_from(config)  # the converted backbone fits the config
    config.model.width = 2
    with pytest.raises(Exception, match="width"):
        pretrained.check_init_from(config)


@pytest.mark.parametrize("mode", ["corrupted", "cut"])
def test_a_corrupted_or_interrupted_download_is_refused_and_nothing_is_cached(server, tiny, tmp_path, mode):
    _, body, name = tiny
    served = body[:-8] + b"\0" * 8 if mode == "corrupted" else body
    server.files[name] = (served, "ok" if mode == "corrupted" else "cut")
    table = {"torchvision:tiny.TEST": hub.NamedWeights(server.url + name, depth=14)}
    expected = "is corrupted: its SHA-256" if mode == "corrupted" else "was interrupted"
    with pytest.raises(BadFileError, match=expected) as error:
        pretrained.resolve_name("torchvision:tiny.TEST", table, str(tmp_path / "cache"))
    assert "nothing was cached" in str(error.value)
    assert cached_files(tmp_path / "cache") == []
    server.files[name] = (body, "ok")  # the next attempt, served properly, succeeds
    assert os.path.isdir(pretrained.resolve_name("torchvision:tiny.TEST", table, str(tmp_path / "cache")))


def test_offline_and_unknown_names_say_what_to_do(tmp_path, server):
    table = {"torchvision:tiny.TEST": hub.NamedWeights(server.url.rsplit(":", 1)[0] + ":9/tiny-00000000.pth")}
    with pytest.raises(MissingFileError, match=r"Could not download .*put it at .*downloads/tiny-00000000.pth"):
        pretrained.resolve_name("torchvision:tiny.TEST", table, str(tmp_path / "cache"))
    with pytest.raises(MissingFileError, match="known: torchvision:resnet50.IMAGENET1K_V1"):
        pretrained.resolve_name("torchvision:resnet18.IMAGENET1K_V1")
    assert {"torchvision:wide_resnet50_2.IMAGENET1K_V1", "torchvision:wide_resnet50_2.IMAGENET1K_V2",
            "torchvision:resnet50.IMAGENET1K_V1", "torchvision:resnet50.IMAGENET1K_V2"} <= set(hub.NAMED)
    assert all(hub.PREFIX_RE.search(w.filename) for w in hub.NAMED.values())
