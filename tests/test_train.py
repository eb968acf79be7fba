"""Training end to end on tiny cluttered MNIST: resume, checkpoints, failure modes."""

import os
import shutil

import flax
import jax
import ml_collections
import numpy as np
import pytest

from conftest import restore, tiny_train_config
from numerics import assert_close_to, gamma, probable_error
from wrna_jax import checkpoint, evaluate, feeds, metrics
from wrna_jax import train as train_module
from wrna_jax.errors import ConfigError
from wrna_jax.models import create_model
from wrna_jax.optim import learning_rate_schedule, parameter_groups
from wrna_jax.state import init_variables
from wrna_jax.train import train_and_evaluate


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_run, tmp_path, monkeypatch):
    config, finished, _ = tiny_run
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    steps = checkpoint.Checkpoints(workdir).all_steps()
    config = config.copy_and_resolve_references()
    config.num_epochs += 1
    # The resumed run's second batch is NaN (a resume with another learning rate would be refused
    # as another run). Its loss is finite on XLA:CPU, its gradients and BatchNorm statistics are
    # not: step 34 is the one reported, and nothing of it is kept.
    real = feeds.create_feed

    def poisoned(*args, **kwargs):
        data = real(*args, **kwargs)
        clean = data.train_batches

        def train_batches(*args, **kwargs):
            for i, batch in enumerate(clean(*args, **kwargs)):
                yield {**batch, "image": batch["image"] * np.float32("nan")} if i == 1 else batch
        data.train_batches = train_batches
        return data

    monkeypatch.setattr(feeds, "create_feed", poisoned)
    with pytest.raises(FloatingPointError, match=rf"The loss, the gradients or the BatchNorm statistics became NaN or infinite at step 34; training stopped without saving "
                                                 rf"that state, and the last good checkpoint, step {steps[-1]}, is "
                                                 rf"kept in .*Lower optimizer.learning_rate or check the input data"):
        train_and_evaluate(config, workdir)
    assert checkpoint.Checkpoints(workdir).all_steps() == steps
    _, params, _ = restore(config, workdir)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(params))


def test_invalid_config_fails_before_any_data_or_workdir(tmp_path):
    config = tiny_train_config(str(tmp_path / "never_created"))
    config.attention.depth = 6
    with pytest.raises(ValueError, match=r"attention.depth \(AD\) = 6"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "never_created").exists() and not (tmp_path / "run").exists()


def test_eval_rejects_a_checkpoint_of_another_model(tiny_run):
    config, workdir, _ = tiny_run
    config = config.copy_and_resolve_references()
    config.attention.width = 3
    config.attention.mask_fn = "sigmoid"
    before = sorted(os.listdir(workdir))
    with pytest.raises(ValueError, match=r"attention.mask_fn: checkpoint None, config 'sigmoid'; "
                                         r"attention.width: checkpoint 2, config 3"):
        evaluate.evaluate_checkpoint(config, workdir)
    with pytest.raises(ValueError, match=r"different model config"):
        train_and_evaluate(config, workdir)
    assert sorted(os.listdir(workdir)) == before  # refused before writing anything


def test_has_checkpoints_ignores_unfinished_saves(tmp_path):
    assert not checkpoint.has_checkpoints(str(tmp_path / "never_trained"))
    os.makedirs(tmp_path / "run" / "checkpoints" / "16.orbax-checkpoint-tmp-1234")
    assert not checkpoint.has_checkpoints(str(tmp_path / "run"))
    os.makedirs(tmp_path / "run" / "checkpoints" / "8")
    assert checkpoint.has_checkpoints(str(tmp_path / "run"))


def test_checkpoint_choice_errors(tmp_path):
    ckpts = checkpoint.Checkpoints(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="No checkpoint in .*train first"):
        ckpts.resolve("best")


def test_schedules_and_learning_rate_groups():
    config = tiny_train_config("unused")
    config.optimizer.learning_rate = 0.2
    config.schedule.update(kind="every", every_epochs=2, factor=0.5, warmup_epochs=1)
    schedule = learning_rate_schedule(config, steps_per_epoch=10)
    assert [float(schedule(s)) for s in (0, 5, 10, 19, 20, 40)] == pytest.approx([0, 0.1, 0.2, 0.2, 0.1, 0.05])
    config.schedule.update(kind="steps", boundaries_epochs=(1, 3), factor=0.1, warmup_epochs=0)
    schedule = learning_rate_schedule(config, steps_per_epoch=10)
    assert [float(schedule(s)) for s in (0, 9, 10, 29, 30)] == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002])
    # Fractions of an epoch round to the nearest step: 0.75 x 10 = 7.5 -> 8, 1.35 x 10 -> 14.
    config.schedule.update(boundaries_epochs=(0.75,))
    schedule = learning_rate_schedule(config, steps_per_epoch=10)
    assert [float(schedule(s)) for s in (7, 8)] == pytest.approx([0.2, 0.02])
    schedule = learning_rate_schedule({"optimizer": {"learning_rate": 0.2}, "schedule": {
        "kind": "every", "every_epochs": 1.35, "factor": 0.5, "warmup_epochs": 0.75}}, steps_per_epoch=10)
    assert [float(schedule(s)) for s in (4, 8, 13, 14)] == pytest.approx([0.1, 0.2, 0.2, 0.1])
    config.schedule.kind = "cosine"
    with pytest.raises(ValueError, match="'constant', 'steps', 'every'"):
        learning_rate_schedule(config, 10)
    params = {"backbone": {"conv1": {"kernel": 0}, "fc2": {"kernel": 0}},
              "att_conv5": {"mask_conv": {"kernel": 0}}, "output_gate": {"gate": {"kernel": 0}}}
    groups = flax.traverse_util.flatten_dict(parameter_groups(params, "fc2"), sep="/")
    assert groups == {"backbone/conv1/kernel": "backbone", "backbone/fc2/kernel": "head",
                      "att_conv5/mask_conv/kernel": "head", "output_gate/gate/kernel": "head"}


def test_checkpoints_keep_the_latest_and_the_best(tmp_path):
    ckpts = checkpoint.Checkpoints(str(tmp_path), keep=2)
    for step, accuracy in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.65)]:
        ckpts.save(step, {"w": np.full(3, step, np.float32)}, ml_collections.ConfigDict({"seed": step}),
                   {"accuracy": accuracy})
    ckpts.wait()
    reopened = checkpoint.Checkpoints(str(tmp_path), keep=2)
    assert reopened.all_steps() == [2, 4, 5]
    assert reopened.resolve("best") == 2 and reopened.resolve("latest") == 5
    assert reopened.resolve("4") == 4 and reopened.metrics(2) == {"accuracy": 0.9}
    assert checkpoint.resume_point(reopened, ml_collections.ConfigDict({"seed": 5})) == 5  # the newest
    restored = reopened.restore(2, {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(restored["w"], [2, 2, 2])
    assert reopened.saved_config(4) == {"seed": 4}
    with pytest.raises(ValueError, match=r"use 'best', 'latest' or one of the saved steps \[2, 4, 5\]"):
        reopened.resolve("3")


def test_a_run_saved_before_the_shared_order_resumes_only_where_its_order_is_unchanged(tmp_path):
    """Checkpoints from before data/order.py defined both feeds' order have
    dataset.shuffle_buffer: a host-feed run is refused in one line naming the fix; a
    single-process device-feed run, whose order is unchanged, resumes."""
    old = {"dataset": {"name": "d", "shuffle_buffer": 16384}, "seed": 0}
    config = ml_collections.ConfigDict({"dataset": {"name": "d"}, "seed": 0})
    for feed in ("host", "device"):
        ckpts = checkpoint.Checkpoints(str(tmp_path / feed))
        ckpts.save(3, {"w": np.zeros(2, np.float32)}, ml_collections.ConfigDict({**old, "input": {"feed": feed}}))
        ckpts.wait()
        if feed == "host":
            with pytest.raises(ConfigError, match=r"^Cannot resume from step 3 in .*: the run was trained on the host "
                                                  r"feed with a shuffle buffer, .* start a new run in another "
                                                  r"--workdir"):
                checkpoint.resume_point(ckpts, config)
        else:
            assert checkpoint.resume_point(ckpts, config) == 3
            with pytest.raises(ConfigError, match="on the device feed with one order for all processes"):
                checkpoint.check_same_order(ckpts.saved_config(3), 3, "w", process_count=2)
        ckpts.close()
    checkpoint.check_same_order({"dataset": {"name": "d"}, "input": {"feed": "host"}}, 3, "w", 2)  # a new run


def test_ten_crop_evaluation_averages_log_probabilities_over_crops():
    from conftest import model_config

    model = create_model(model_config(ad=2, aw=2))
    images = jax.random.uniform(jax.random.key(0), (3, 10, 40, 40, 1))
    variables = init_variables(model, (40, 40, 1), seed=1)
    out = jax.jit(lambda v, x: metrics.multi_crop_output(model, v, x))(variables, images)
    apply = jax.jit(model.apply)
    singles = [apply(variables, images[:, c]) for c in range(10)]
    # One program on all 30 crops against ten on 3 each: the same ~10 layers (longest reduction:
    # fc1's 2,048 inputs) rounded in other orders, then means over 10 crops.
    relative = probable_error(2048, layers=10) + gamma(10)
    assert_close_to(out.log_probs, np.mean([s.log_probs for s in singles], axis=0), relative=relative,
                    what="log-probabilities")
    assert_close_to(out.gates, np.mean([s.gates for s in singles], axis=0), relative=relative, what="gates")
    hyp = np.mean([jax.nn.log_softmax(s.hypotheses, -1) for s in singles], axis=0)
    assert_close_to(out.hypotheses, hyp, relative=relative, what="hypotheses")
    assert_close_to(out.masks["conv5"], singles[4].masks["conv5"], relative=relative, what="masks")
    assert out.log_probs.shape == (3, 10)


def test_eval_step_sums_count_padding_nowhere_and_give_the_split_metrics():
    import jax.numpy as jnp

    from wrna_jax.errors import TrainingDivergedError
    from wrna_jax.models import ModelOutput

    class Fixed:
        """A model whose output is its input: (B, 5, 6, 1) images hold log-probabilities,
        two hypotheses, gates and a mask."""

        def apply(self, variables, images, train):
            images = images[..., 0]
            return ModelOutput(log_probs=images[:, 0, :6], hypotheses=images[:, 1:3, :6], gates=images[:, 3, :2],
                               masks={"conv": images[:, None, None, 4, :1]}, regularizer=jnp.zeros(()))

    rng = np.random.default_rng(0)
    images = np.log(rng.dirichlet(np.ones(6), size=(4, 5)).astype(np.float32))
    images[:, 3, :2] = [[0.25, 0.75], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]
    labels = np.argmax(images[:, 0], -1).astype(np.int32)
    labels[1] = np.argsort(images[1, 0])[-2]  # second best: top-5 but not top-1
    labels[2] = np.argmin(images[2, 0])  # not even top-5 of 6 classes
    mask = np.array([True, True, True, False])  # the last is padding
    sums, _ = metrics.eval_step({}, {"image": jnp.asarray(images)[..., None], "label": labels, "mask": mask}, model=Fixed())
    assert (float(sums["count"]), float(sums["correct"]), float(sums["correct_top5"])) == (3, 1, 2)
    np.testing.assert_allclose(sums["nll"], -sum(images[i, 0, labels[i]] for i in range(3)), rtol=4 * 2.0 ** -24)
    expected_hyp = [sum(int(np.argmax(images[i, h, :6]) == labels[i]) for i in range(3)) for h in (1, 2)]
    np.testing.assert_array_equal(sums["hypothesis_correct"], expected_hyp)
    np.testing.assert_allclose(sums["gate_sum"], [1.75, 1.25])
    confusion = np.zeros((6, 6))
    for i in range(3):
        confusion[labels[i], np.argmax(images[i, 0])] += 1
    np.testing.assert_array_equal(sums["confusion"], confusion)
    result = metrics.metrics_from_sums(sums, ("backbone", "conv/head0"), 6)
    assert result["num_examples"] == 3 and result["accuracy"] == 1 / 3 and result["top5_accuracy"] == 2 / 3
    assert result["loss"] == pytest.approx(float(sums["nll"]) / 3)
    assert result["hypothesis_accuracy"] == {"backbone": expected_hyp[0] / 3, "conv/head0": expected_hyp[1] / 3}
    assert result["mean_gates"] == pytest.approx({"backbone": 1.75 / 3, "conv/head0": 1.25 / 3})
    assert result["confusion"] == confusion.astype(int).tolist()
    assert "top5_accuracy" not in metrics.metrics_from_sums(sums, ("backbone", "conv/head0"), 5)

    class Checkpoints:
        directory = "ckpts"

        def latest_step(self):
            return 8

        def wait(self):
            pass

    fine = [{"loss": 2.0, "nll": 1.5, "regularizer": 0.5, "accuracy": 0.25, "learning_rate": 0.1, "nonfinite": -1},
            {"loss": 1.0, "nll": 0.5, "regularizer": 0.0, "accuracy": 0.75, "learning_rate": 0.01, "nonfinite": -1}]
    assert metrics.summarise_steps(fine, Checkpoints()) == {
        "train_loss": 1.5, "train_nll": 1.0, "train_regularizer": 0.25, "train_accuracy": 0.5, "learning_rate": 0.01}
    with pytest.raises(TrainingDivergedError, match="infinite at step 11;.* step 8, is kept in ckpts"):
        metrics.check_finite([fine[0], {**fine[1], "nonfinite": 10}, {**fine[1], "nonfinite": 11}], Checkpoints())


def test_early_stop_counts_evaluations_since_the_best_and_a_signal_saves_only_unsaved_steps():
    class Recorder:
        directory, saved, best = "ckpts", [], 20

        def save(self, step, state, config, metrics=None):
            self.saved.append((step, metrics))

        def best_step(self):
            return self.best

    ckpts, config = Recorder(), ml_collections.ConfigDict({"early_stop_patience": 2})
    assert checkpoint.save_evaluated(ckpts, 30, {}, config, 0.5, eval_every=10) is None  # 1 evaluation since
    assert checkpoint.save_evaluated(ckpts, 40, {}, config, 0.5, eval_every=10) == (
        "Early stop at step 40: no improvement since step 20.")
    assert ckpts.saved == [(30, {checkpoint.METRIC: 0.5}), (40, {checkpoint.METRIC: 0.5})]
    config.early_stop_patience = 0  # never
    assert checkpoint.save_evaluated(ckpts, 90, {}, config, 0.5, eval_every=10) is None
    ckpts.saved.clear()
    message = checkpoint.save_interrupted(ckpts, 40, {}, config, eval_every=10, signal="SIGTERM")
    assert ckpts.saved == [] and message.startswith("Interrupted (SIGTERM) at step 40: checkpoint saved in ckpts")
    checkpoint.save_interrupted(ckpts, 43, {}, config, eval_every=10, signal="SIGINT")
    assert ckpts.saved == [(43, None)]


def test_sgd_follows_pytorch_weight_decay_then_momentum_then_the_group_learning_rate():
    """Two steps of optim.create_optimizer against PyTorch's SGD written out, with the learning
    rate changing between them (so that where it is applied matters) and a head group."""
    import jax

    from wrna_jax.optim import create_optimizer

    config = {"optimizer": {"learning_rate": 0.5, "weight_decay": 0.1, "momentum": 0.9, "nesterov": True,
                            "head_lr_multiplier": 10.0},
              "schedule": {"kind": "steps", "boundaries_epochs": (1,), "factor": 0.1, "warmup_epochs": 0}}
    params = {"backbone": {"conv": {"kernel": np.array([1.0, -2.0], np.float32)},
                           "fc": {"kernel": np.array([0.5], np.float32)}},
              "att": {"kernel": np.array([3.0], np.float32)}}
    grads = [jax.tree.map(lambda p, i=i: np.full_like(p, 0.25 * (i + 1)), params) for i in range(2)]
    tx = create_optimizer(config, steps_per_epoch=1, classifier="fc")
    state, got = tx.init(params), params
    for g in grads:
        updates, state = tx.update(g, state, got)
        got = jax.tree.map(lambda p, u: p + u, got, updates)

    def pytorch(p, gs, multiplier):
        p, buffer = np.float64(p), None
        for step, g in enumerate(gs):
            d = g + 0.1 * p
            buffer = d if buffer is None else 0.9 * buffer + d
            p = p - (0.5 if step == 0 else 0.05) * multiplier * (d + 0.9 * buffer)
        return p

    flat = flax.traverse_util.flatten_dict(got, sep="/")
    for name, multiplier in (("backbone/conv/kernel", 1), ("backbone/fc/kernel", 10), ("att/kernel", 10)):
        gs = [flax.traverse_util.flatten_dict(g, sep="/")[name] for g in grads]
        want = pytorch(flax.traverse_util.flatten_dict(params, sep="/")[name], gs, multiplier)
        np.testing.assert_allclose(flat[name], want, rtol=1e-6, err_msg=name)
