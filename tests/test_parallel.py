"""Data parallelism compared across device and process counts on the same global batches.

One process with 8 simulated CPU devices computes one SGD step on 1 and on 8 devices (and the
4-device reference below); two processes with 2 devices each (`jax.distributed` on localhost,
gloo) train the same steps as one process with 4 devices. The three processes run concurrently
(tests/workers.py, the `runs` fixture in conftest.py, which test_distributed.py shares) and
report arrays and facts; the comparisons happen here.

Tolerances (tests/numerics.py): the configurations compute the same function and differ only in
the order of their float32 reductions (per-device partial sums, all-reduces across devices and
processes). The reference (one device, or one process) is also computed on the same batches with
the examples reordered, which measures each tensor's summation-order noise on this CPU; each
tensor's update must agree within a few times that noise, plus rtol of its own size, plus the
rounding of storing the results. BatchNorm running statistics, which can be zero up to rounding,
are also allowed the worst-case error of their batch statistics for any summation order: gamma(n)
of the longest reduction of a step, the input BatchNorm's over batch x 40 x 40 values.
"""

import json
import os

import numpy as np
import pytest

from numerics import assert_same_updates

# One step, 1 vs 8 devices: what the reordering noise does not cover. Measured: at most 4e-5 of a
# tensor's update (Intel Xeon) beyond the rounding floors. A wrong result (a device's shard
# dropped or counted twice: the update then differs by ~1/8) fails by far.
ONE_STEP_RTOL = 1e-3
# Two steps with accumulation, two processes vs one: step 2 starts from parameters that already
# differ by step 1's rounding, which BatchNorm and max pooling carry into step 2's update.
# Measured: at most 3.4e-5 of a tensor's update. A shard fed twice or dropped differs by ~1/2.
TWO_STEP_RTOL = 2e-3
REORDERINGS = 3


def load(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return dict(data)


def test_eight_devices_match_one_device_on_the_same_global_batch(runs):
    facts, out = runs
    assert facts["data_parallel"]["device_count"] == 8
    assert facts["data_parallel"]["batch_devices_8"] == 8  # the state lives on all 8 devices
    reordered = [load(out / f"one_step_1_reordered{i}.npz") for i in range(REORDERINGS)]
    rows = assert_same_updates(load(out / "one_step_before.npz"), load(out / "one_step_1.npz"),
                               load(out / "one_step_8.npz"), rtol=ONE_STEP_RTOL, reduction_size=32 * 40 * 40,
                               reordered=reordered, what="8 devices vs 1")
    print("worst relative update difference", max(r["relative"] for r in rows if r["name"].startswith("params")))
    assert all(r["update"] > 0 for r in rows if r["name"].startswith("params/"))


def test_two_processes_with_two_devices_each_match_one_process_with_four(runs):
    facts, out = runs
    for pid in (0, 1):
        process = facts[f"process_{pid}"]
        assert (process["joined"], process["process_count"], process["device_count"],
                process["local_device_count"]) == (True, 2, 4, 2)
        before = load(out / f"distributed_before_2_{pid}.npz")
        np.testing.assert_array_equal(before["params/backbone/fc2/kernel"],  # same initialisation
                                      load(out / "distributed_before_1.npz")["params/backbone/fc2/kernel"])
        assert_same_updates(load(out / "distributed_before_1.npz"), load(out / "distributed_after_1.npz"),
                            load(out / f"distributed_after_2_{pid}.npz"), rtol=TWO_STEP_RTOL,
                            reduction_size=16 // 2 * 40 * 40, what=f"process {pid} of 2 vs one process",
                            reordered=[load(out / f"distributed_after_1_reordered{i}.npz")
                                       for i in range(REORDERINGS)])
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


def test_batch_sizes_that_do_not_divide_over_the_devices_are_refused():
    from types import SimpleNamespace

    from wrna_jax import parallel

    eight = SimpleNamespace(devices=np.empty(8, object))  # what check_batch_size reads of a mesh
    with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices of the mesh: "
                                         r"use a multiple of 8 \(e.g. 8 or 16\)"):
        parallel.check_batch_size(12, eight)
    assert parallel.check_batch_size(16, eight) == 16
