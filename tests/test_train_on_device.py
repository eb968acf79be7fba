"""wrna_jax/train_on_device.py: the index stream, the same steps as the tf.data path for the same
order of examples, resume, evaluation, and that it imports no TensorFlow."""

import itertools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import read_png, restore, tiny_train_config
from wrna_jax import parallel
from wrna_jax import train_on_device as device
from wrna_jax.data import canvases
from wrna_jax.errors import ConfigError
from wrna_jax.models import create_model
from wrna_jax.state import create_train_state
from wrna_jax.steps import make_train_step


def _config(data_dir: str):
    config = tiny_train_config(data_dir)
    config.attention.depth = 0  # the cheapest model to compile: the data path is the same for all
    return config


def _splits(config, mesh):
    return device.cluttered_mnist_splits(config.dataset, mesh, ("train", "validation", "test"))


def test_stream_indices_are_epoch_permutations_that_batches_straddle():
    n, b = 10, 4
    # 10 steps of 4 = 40 positions = 4 epochs; epoch e is positions 10e .. 10e + 9.
    stream = np.concatenate([np.asarray(device.stream_indices(3, k, 1, b, n)).ravel() for k in range(10)])
    epochs = stream.reshape(4, n)
    assert all(sorted(epoch) == list(range(n)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) == 4  # reshuffled every epoch
    # A call of several steps is the same stream (step 2 straddles epochs 0 and 1).
    np.testing.assert_array_equal(np.asarray(device.stream_indices(3, 1, 2, b, n)).ravel(), stream[4:12])
    assert not np.array_equal(np.asarray(device.stream_indices(4, 0, 2, b, n)).ravel(), stream[:8])
    with pytest.raises(ValueError, match="exceed one epoch"):
        device.stream_indices(0, 0, 3, b, n)


def test_same_steps_as_the_tfdata_path_for_the_same_order(data_dir):
    from wrna_jax.data.input import create_input

    config = _config(data_dir)
    mesh = parallel.create_mesh()
    model = create_model(config)
    steps_per_epoch = config.dataset.cluttered_mnist.num_train // config.batch_size
    tf_batches = list(itertools.islice(create_input(config.dataset).train_batches(config.batch_size, seed=config.seed),
                                       3))
    train = canvases.generate_split(canvases.spec_of(config.dataset), "train")
    position = {image.tobytes(): i for i, image in enumerate(train["image"])}
    order = np.asarray([[position[np.rint(image * 255).astype(np.uint8).tobytes()] for image in batch["image"]]
                        for batch in tf_batches])
    split = device.put_split(train["image"], train["label"], mesh)
    for batch, indices in zip(tf_batches, order):
        np.testing.assert_array_equal(np.asarray(device.as_inputs(split.images[indices])), batch["image"])
        np.testing.assert_array_equal(train["label"][indices], batch["label"])

    def tf_path(batches):
        step = make_train_step(config, model, mesh, steps_per_epoch)
        state = create_train_state(config, model, split.input_shape, mesh, steps_per_epoch)
        losses = []
        for batch in batches:
            state, metrics = step(state, parallel.shard_batch({k: batch[k] for k in ("image", "label")},
                                                              parallel.batch_sharding(mesh)))
            losses.append(float(metrics["loss"]))
        return jax.device_get(state.params), losses

    run = device.make_run_steps(config, model, mesh, steps_per_epoch)
    state = create_train_state(config, model, split.input_shape, mesh, steps_per_epoch)
    initial = jax.device_get(state.params)
    losses = []
    for indices in order:  # one step per call, as on the CPU
        state, metrics = run(state, split, indices[None])
        losses.append(float(metrics["loss"][0]))
    tf_params, tf_losses = tf_path(tf_batches)
    # Not bit for bit: the gather is compiled into the step's program, which changes XLA's
    # fusions and so the float32 summation order of the gradients (sums over 64 x 40 x 40
    # positions; relative rounding ~ sqrt(102,400) x 6e-8 = 2e-5 per step, amplified a little by
    # three steps of momentum and BatchNorm). 0.1% of each tensor's change is 50x that; a
    # different batch order (below) changes the parameters by about as much as training did.
    def worst_relative_difference(params):
        return max(jax.tree.leaves(jax.tree.map(
            lambda p, q, p0: float(np.max(np.abs(p - q)) / np.max(np.abs(q - p0))), params, tf_params, initial)))

    assert worst_relative_difference(jax.device_get(state.params)) < 1e-3
    np.testing.assert_allclose(losses, tf_losses, rtol=1e-5)
    swapped, _ = tf_path([tf_batches[1], tf_batches[0], tf_batches[2]])
    assert worst_relative_difference(swapped) > 0.1


def test_train_resume_and_evaluate_on_device(tmp_path, data_dir):
    config = _config(data_dir)
    mesh = parallel.create_mesh()
    splits = _splits(config, mesh)
    whole, halves = str(tmp_path / "whole"), str(tmp_path / "halves")
    result = device.train_on_device(config, whole, splits["train"], splits["validation"])
    assert result["step"] == 16 and result["interrupted_by"] is None
    first = config.copy_and_resolve_references()
    first.num_epochs = 1
    assert device.train_on_device(first, halves, splits["train"], splits["validation"])["step"] == 8
    assert device.train_on_device(config, halves, splits["train"], splits["validation"])["step"] == 16
    # The resumed run is the uninterrupted one: same parameters, same logs.
    for a, b in zip(restore(config, whole)[1:], restore(config, halves)[1:]):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    logs = [open(os.path.join(d, "metrics.jsonl")).read() for d in (whole, halves)]
    assert logs[0] == logs[1]
    lines = [json.loads(line) for line in logs[0].splitlines()]
    assert [m["step"] for m in lines if "val_accuracy" in m] == [8, 16]
    assert [m["step"] for m in lines if "train_loss" in m] == [4, 8, 12, 16]
    read_png(os.path.join(whole, "training_curves.png"))

    # Evaluation of the best checkpoint = the model applied to the canvases, counted here.
    evaluated = device.evaluate_checkpoint_on_device(config, whole, {"test": splits["test"]}, "best")
    step, params, stats = restore(config, whole, "best")
    assert evaluated["checkpoint_step"] == step
    test = canvases.generate_split(canvases.spec_of(config.dataset), "test")
    log_probs = jax.jit(create_model(config).apply)({"params": params, "batch_stats": stats},
                                                    test["image"] / np.float32(255)).log_probs
    assert evaluated["test"]["num_examples"] == len(test["label"]) == 80  # 3 batches of 32, the last masked
    assert evaluated["test"]["accuracy"] == np.mean(np.argmax(log_probs, -1) == test["label"])


def test_refuses_datasets_it_cannot_preprocess(data_dir, make_config):
    config = _config(data_dir)
    config.init_from = "imported.msgpack"
    with pytest.raises(ConfigError, match="starts from scratch"):
        device.check_config(config)
    cifar = make_config("cifar_wrn")
    cifar.dataset.name = "cifar10"
    with pytest.raises(ConfigError, match="use train.py"):
        device.check_config(cifar)


def test_imports_no_tensorflow():
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None\n"
            "import wrna_jax.train_on_device, experiments.cluttered_mnist_study.run\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu', 'tensorflow_datasets')"
            " and sys.modules[m] is not None))")
    out = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
