"""Data parallelism: two processes with 2 simulated CPU devices each (4 devices, `jax.distributed`
on localhost, gloo; the `runs` fixture of conftest.py runs them: tests/workers.py) train the same two accumulated
steps on the same global batches as one device here, and report arrays and facts; the
comparisons happen here. The same processes then run train.py and eval.py together (the tests
that read `runs` are in this module, so one pytest-xdist worker waits for them, not both).

Tolerances (tests/numerics.py): the configurations compute the same function and differ only in
the order of their float32 reductions (per-device partial sums, all-reduces across devices and
processes). The reference (one device) is also computed on the same batches with the examples
reordered within each micro-batch, which measures each tensor's summation-order noise on this
CPU; each tensor's update must agree within a few times that noise, plus rtol of its own size,
plus the rounding of storing the results. BatchNorm running statistics, which can be zero up to
rounding, are also allowed the worst-case error of their batch statistics for any summation
order: gamma(n) of the longest reduction of a step, the input BatchNorm's over a micro-batch x
40 x 40 values.
"""

import json
import os

import numpy as np
import pytest

from conftest import read_png
from numerics import assert_same_updates
from workers import BATCHES, REORDERINGS, distributed_config, random_batches, reordered, train

# Two steps with accumulation, 4 devices on two processes vs one device: step 2 starts from
# parameters that already differ by step 1's rounding, which BatchNorm and max pooling carry into
# step 2's update. Measured: at most 3.4e-5 of a tensor's update (2 processes x 2 devices vs 4
# devices, Intel Xeon). A shard fed twice or dropped changes an update by ~1/4 or more.
TWO_STEP_RTOL = 2e-3


def load(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


def test_two_processes_of_two_devices_match_one_device(runs):
    from wrna_jax import parallel

    facts, out = runs
    config, batches = distributed_config(), random_batches(**BATCHES)
    one, *noise = train(config, [batches] + [reordered(batches, seed, config.grad_accum_steps)
                                             for seed in range(REORDERINGS)], parallel.create_mesh(1))
    for pid in (0, 1):
        process = facts[f"process_{pid}"]
        assert (process["joined"], process["process_count"], process["device_count"],
                process["local_device_count"], process["state_devices"]) == (True, 2, 4, 2, 4)
        before = load(out / f"distributed_before_2_{pid}.npz")
        np.testing.assert_array_equal(before["params/backbone/fc2/kernel"],  # same initialisation
                                      one[0]["params/backbone/fc2/kernel"])
        rows = assert_same_updates(one[0], one[1], load(out / f"distributed_after_2_{pid}.npz"), rtol=TWO_STEP_RTOL,
                                   reduction_size=BATCHES["size"] // config.grad_accum_steps * 40 * 40,
                                   what=f"process {pid} of 2 (4 devices) vs one device",
                                   reordered=[run[1] for run in noise])
        assert all(r["update"] > 0 for r in rows if r["name"].startswith("params/"))
        # Checkpoints written together restore exactly, on every process.
        assert process["restored_step"] == 2
        assert max(process["restored_differences"].values()) == 0.0, process["restored_differences"]
    np.testing.assert_array_equal(*(load(out / f"distributed_after_2_{pid}.npz")["params/backbone/fc2/kernel"]
                                    for pid in (0, 1)))  # one global computation: identical everywhere
    assert facts["process_1"]["marker_seen_by_process_1"] == "written by process 0"  # process_0_first
    # The workdir lock: process 0 holds it for the run; a second run is refused on every process.
    for pid in (0, 1):
        assert "is in use by another training run: pid" in facts[f"process_{pid}"]["second_lock"], facts
    # SIGTERM to process 1 at iteration 5: both stop at the same, later iteration.
    stops = {facts[f"process_{pid}"]["preempted_at"] for pid in (0, 1)}
    assert len(stops) == 1 and stops.pop() > 5, facts
    log = [json.loads(line) for line in open(out / "run2" / "metrics.jsonl")]
    assert [r["step"] for r in log] == [2]  # written by process 0 only
    assert sorted(os.listdir(out / "run2" / "checkpoints")) == ["2"]


def test_train_py_and_eval_py_across_two_processes(runs):
    """The user's commands on two processes x 2 devices, on the device feed (run by the `runs`
    processes of conftest.py after their own checks, as the shell would run them one after the
    other): each process holds only its share of the data, process 0 alone writes the logs and
    figures, the checkpoints written together restore for evaluation (eval.py's main, after
    train.py's in the same two processes), and eval.py counts every example of the split exactly
    once."""
    facts, out = runs
    run = out / "train_eval"
    assert [facts[f"process_{pid}"]["train_then_eval"] for pid in (0, 1)] == [0, 0]
    assert all(facts[f"process_{pid}"]["local_device_count"] == 2 and facts[f"process_{pid}"]["device_count"] == 4
               for pid in (0, 1))
    # The device feed: each process holds its half of each split (128 training and 96 validation
    # canvases): 40 x 40 uint8 pixels, a 2 x int32 size, a bool and an int32 label each.
    from wrna_jax import feeds

    example = 40 * 40 + 2 * 4 + 1 + 4
    logs = [(out / f"process_{pid}.log").read_text() for pid in (0, 1)]
    assert (f"device feed: {feeds.describe_bytes((128 + 96) // 2 * example)} resident per device "
            "(train, validation)") in logs[0]
    assert all(f"device feed: {feeds.describe_bytes(96 // 2 * example)} resident per device (validation)" in log
               for log in logs)
    records = [json.loads(line) for line in open(run / "metrics.jsonl")]
    val = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in val] == [2, 4]  # one line per evaluation: process 0 only
    assert sorted(os.listdir(run / "checkpoints")) == ["2", "4"]

    results = json.load(open(run / "eval_latest" / "eval_results.json"))
    assert results["checkpoint_step"] == 4 and results["num_examples"] == 96
    assert results["accuracy"] == val[-1]["val_accuracy"]  # the same program on the same checkpoint
    # Process 0 draws the masks of the first 3 validation canvases: 1 + 2 heads columns.
    read_png(run / "eval_latest" / "attention_masks.png", size=(480, 510))


def test_batch_sizes_that_do_not_divide_over_the_devices_are_refused():
    from types import SimpleNamespace

    from wrna_jax import parallel

    eight = SimpleNamespace(devices=np.empty(8, object))  # what check_batch_size reads of a mesh
    with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices of the mesh: "
                                         r"use a multiple of 8 \(e.g. 8 or 16\)"):
        parallel.check_batch_size(12, eight)
    assert parallel.check_batch_size(16, eight) == 16
