"""Shared test helpers: small configs built the way the real configs are, and subprocesses."""

import fcntl
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
from typing import Any, Callable

# One persistent compilation cache for the whole test session: pytest-xdist's workers and every
# subprocess a test starts inherit these variables (set here, in the controller, before any worker
# starts), so a program compiled once is loaded from disk everywhere else.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.environ.get("WRNA_TEST_JAX_CACHE") or tempfile.mkdtemp(prefix="wrna_jax_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# The numerical tests compare against float32 references: on GPUs, JAX's default precision for
# float32 convolutions and matrix products is TF32 (about 1e-3 relative error), so ask for full
# float32 there. CPUs compute float32 either way.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
from wrna_jax import xla_flags  # noqa: E402

# The XLA:CPU settings every entry point uses (train.py, eval.py, ...), here before JAX starts, so
# the tests (and the subprocesses that inherit XLA_FLAGS) compile the programs users run: the same
# XLA passes, fusions and operations in the same order. One setting differs: LLVM generates their
# machine code without optimising it (XLA's backend optimisation level 0), which takes about a
# third off the suite's CPU time, most of it compilation. Float32 results then differ from the
# optimised code's by rounding only (how multiply-adds are contracted and loops vectorised), which
# every tolerance here allows: they hold for any summation order and fused roundings. Matrix
# products and convolutions run in the same libraries either way (YNNPACK).
xla_flags.apply_cpu_defaults()
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} --xla_backend_optimization_level=0".strip()
import ml_collections  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def model_config(backbone: str = "mnist_cnn", *, ad: int = 2, aw: int = 2, preset: str = "released",
                 num_classes: int = 10, depth: int = 10, width: int = 1, dtype: str = "float32",
                 **attention) -> ml_collections.ConfigDict:
    """configs/default.py with the model and attention settings given (depth and width are the
    backbone's: WRN-d-k's d and k, or the ResNet depth and width factor)."""
    from configs import default

    config = default.get_config()
    config.model.update(backbone=backbone, num_classes=num_classes, depth=depth, width=width, dtype=dtype)
    config.attention.update(preset=preset, depth=ad, width=aw, gates=True)
    config.attention.update(attention)
    return config


@pytest.fixture
def make_config():
    return model_config


def tiny_train_config(data_dir: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """configs/cluttered_mnist.py shrunk to seconds: 512 training canvases, batch 64."""
    from configs import cluttered_mnist

    config = cluttered_mnist.get_config(arg)
    config.dataset.data_dir = data_dir
    config.dataset.cluttered_mnist.update(num_train=512, num_validation=96, num_test=80)
    config.evals.distractor_sweep.distractors = (4, 16)
    config.evals.attention_masks.examples = 3
    config.batch_size, config.eval_batch_size = 64, 32
    config.num_epochs = 2
    config.schedule.boundaries_epochs = (1,)
    config.log_every_steps = 4
    config.attention.depth = 2
    return config


# The same tiny run as command-line overrides of configs/cluttered_mnist.py.
TINY_FLAGS = ["--config.dataset.cluttered_mnist.num_train=512", "--config.dataset.cluttered_mnist.num_validation=96",
              "--config.dataset.cluttered_mnist.num_test=80", "--config.evals.distractor_sweep.distractors=(4,16)",
              "--config.batch_size=64", "--config.eval_batch_size=32", "--config.num_epochs=2",
              "--config.schedule.boundaries_epochs=(1,)", "--config.attention.depth=2",
              "--config.evals.attention_masks.examples=3", "--config.log_every_steps=4"]


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The model's input shape for `config`'s data (the device feed's view: nothing written)."""
    from wrna_jax import feeds, parallel

    return feeds.create_feed(config, parallel.create_mesh(1), ("test_split",), kind="device",
                             announce=lambda line: None).input_shape


def restore(config: ml_collections.ConfigDict, workdir: str, which: str = "latest"):
    """(step, params, batch_stats) of a checkpoint of `workdir`, as eval.py restores it."""
    import jax

    from wrna_jax import evaluate, parallel
    from wrna_jax.models import create_model

    model = create_model(config)
    restorer = evaluate.Restorer(config, workdir, which)
    try:
        step, variables = restorer.variables(model, input_shape(config), parallel.create_mesh(1))
    finally:
        restorer.close()
    return step, jax.device_get(variables["params"]), jax.device_get(variables["batch_stats"])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One TFDS data_dir for the whole session, so each tiny dataset is generated once."""
    return str(tmp_path_factory.mktemp("tfds"))


def shared_once(tmp_path_factory, name: str, compute: Callable[[pathlib.Path], Any]) -> tuple[pathlib.Path, Any]:
    """(directory, result) of `compute(directory)`, computed once per test session however many
    pytest-xdist workers ask: the first takes a file lock and computes, the others wait and read
    its JSON result. (xdist's own grouping of tests, --dist loadgroup, has no effect with
    pytest 9, and this also lets both workers use the result.)"""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by all workers of the session
    directory, done = root / name, root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            directory.mkdir(exist_ok=True)
            result = compute(directory)
            done.write_text(json.dumps(result))
    return directory, json.loads(done.read_text())


# The tiny run, trained once per session: 4 epochs of 8 steps, evaluated and checkpointed every
# 8 steps, lr x0.1 after epoch 1, with its own data_dir inside the shared directory.
TINY_RUN_EPOCHS = 4


def tiny_run_config(directory: pathlib.Path) -> ml_collections.ConfigDict:
    config = tiny_train_config(str(directory / "data"))
    config.num_epochs = TINY_RUN_EPOCHS
    return config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(config, workdir, result) of `train_and_evaluate` on the tiny run. Its data (the distractor
    sweep's test sets included) are canvases generated with numpy by the device feed, nothing is
    written in the data_dir; tests must not write into the workdir (copy it)."""

    def compute(directory: pathlib.Path) -> dict:
        from wrna_jax.train import train_and_evaluate

        return train_and_evaluate(tiny_run_config(directory), str(directory / "run"))

    directory, result = shared_once(tmp_path_factory, "tiny_run", compute)
    return tiny_run_config(directory), str(directory / "run"), result


# train.py and then eval.py on two processes of 2 devices each: run by the `runs` processes once
# they have joined (test_parallel.py reads the results).
def distributed_commands(out: pathlib.Path, port: str) -> list[str]:
    return ["--config=configs/cluttered_mnist.py", f"--workdir={out / 'train_eval'}",
            f"--config.dataset.data_dir={out / 'data'}", "--config.dataset.cluttered_mnist.num_train=128",
            "--config.dataset.cluttered_mnist.num_validation=96", "--config.dataset.cluttered_mnist.num_test=80",
            "--config.batch_size=64", "--config.eval_batch_size=32", "--config.num_epochs=2",
            "--config.attention.depth=1", "--config.log_every_steps=2",
            "--config.evals.distractor_sweep.distractors=()", "--config.evals.attention_masks.examples=3",
            "--config.distributed.num_processes=2", "--config.distributed.initialization_timeout=120",
            f"--config.distributed.coordinator_address=localhost:{port}"]


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """The multi-process workers (tests/workers.py), run once per session: two processes with 2
    devices each (4 in all) that train the comparison's steps, then run train.py and eval.py
    together. Returns their facts and the output folder."""

    def compute(out):
        port = str(free_port())
        worker = os.path.join(TESTS, "workers.py")
        procs = {}
        for pid in (0, 1):
            commands = [*distributed_commands(out, port), f"--config.distributed.process_id={pid}",
                        "--", "--checkpoint=latest", "--split=validation"]
            procs[f"process_{pid}"] = spawn([worker, "distributed", str(out), "2", str(pid), port, *commands],
                                            devices=2)
        facts = {}
        for name, proc in procs.items():
            stdout, stderr = finish(proc)
            (out / f"{name}.log").write_text(stdout + stderr)
            facts[name] = last_json(stdout)
        return facts

    out, facts = shared_once(tmp_path_factory, "parallel", compute)
    return facts, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def spawn(args: list[str], *, devices: int = 1, timeout_s: int = 240) -> subprocess.Popen:
    """`python ARGS` from the repository root with `devices` simulated CPU devices, killed by
    `timeout` after `timeout_s` seconds (a missing peer would otherwise block forever). With one
    device the XLA flags are this process's (one device when unset): they are part of JAX's
    compilation-cache key, so a program compiled here (the tiny run's) is loaded there, not
    compiled again."""
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count=")]
    if devices != 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "PYTHONPATH": os.pathsep.join([ROOT, TESTS]), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(["timeout", str(timeout_s), sys.executable, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout_s: int = 300) -> tuple[str, str]:
    """(stdout, stderr) of `proc`, asserting it exited 0 (the message shows the end of both)."""
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{(out + err)[-4000:]}"
    return out, err


def last_json(out: str) -> dict:
    """The JSON object a worker prints as its last line."""
    import json

    return json.loads(out.strip().splitlines()[-1])


def read_png(path, size: tuple[int, int] | None = None):
    """The RGB pixels of the PNG at `path`, checking its (width, height) when given and that it
    shows something: many colours and visible contrast, not a blank or one-colour canvas."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", f"{path}: {image.format}"
        if size is not None:
            assert image.size == tuple(size), f"{path}: {image.size} pixels, expected {size}"
        pixels = np.asarray(image.convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 16 and pixels.std() > 10, f"{path} looks blank: {colours} colours, std {pixels.std():.1f}"
    return pixels


def tensorboard_entries(workdir: str, exclude: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """(step, tag) of every scalar in the TensorBoard event files of `workdir`, but `exclude`."""
    from wrna_jax.logs import event_pb2, read_records

    entries = []
    for path in sorted(f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")):
        for record in read_records(os.path.join(workdir, path)):
            event = event_pb2.Event.FromString(record)
            entries += [(event.step, value.tag) for value in event.summary.value if value.tag not in exclude]
    return entries
