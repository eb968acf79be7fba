"""experiments/cluttered_mnist_study: the study's plan, its statistics, table and figures on
fabricated runs, restarts, and one real (one-step) run."""

import argparse
import json
import os
import statistics

import jax
import numpy as np
import pytest

from experiments.cluttered_mnist_study import plan, report, run
from conftest import read_png
from conftest import restore
from wrna_jax.data import canvases
from wrna_jax.models import create_model

SWEEP_OFFSET = {4: 0.02, 8: 0.0, 16: -0.05, 32: -0.2, 64: -0.5}


def _fabricated(variant: plan.Variant, seed: int) -> float:
    """A deterministic accuracy: deeper is better, up to AD=3; wider is better; seeds differ."""
    return 0.8 + 0.01 * min(variant.depth, 3) + 0.002 * variant.width + 0.003 * seed


def fake_train(variant, seed, args):
    """Writes what train_run writes (summary and eval_results.json) without training."""
    directory = plan.run_dir(args.workdir, variant, seed)
    os.makedirs(os.path.join(directory, "eval_best"))
    acc = _fabricated(variant, seed)
    with open(os.path.join(directory, plan.SUMMARY_FILE), "w") as f:
        json.dump({"name": variant.name, "seed": seed, "status": "ok", "val_accuracy": acc,
                   "steps": 1, "train_seconds": 60.0, "eval_seconds": 30.0}, f)
    with open(os.path.join(directory, "eval_best", "eval_results.json"), "w") as f:
        json.dump({"accuracy": acc - 0.001,
                   "accuracy_vs_distractors": {str(d): acc + o for d, o in SWEEP_OFFSET.items()}}, f)
    return plan.load_run(args.workdir, variant, seed)


def test_plan_names_and_the_regulariser_ablation_needs_two_heads():
    assert [v.name for v in plan.depth_stage()] == [
        "baseline", "ad1_aw1", "ad2_aw1", "ad3_aw1", "ad4_aw1", "ad5_aw1", "stn"]
    assert [v.name for v in plan.width_stage(4)] == ["ad4_aw2", "ad4_aw4"]
    assert [v.name for v in plan.ablation_stage(4, 2)] == [
        "ad4_aw2_sigmoid", "ad4_aw2_nogates", "ad4_aw2_noreg"]
    # With one head the regulariser is identically 0: it is ablated at AW = 2 instead.
    assert [v.name for v in plan.ablation_stage(3, 1)][-1] == "ad3_aw2_noreg"
    total = len(plan.depth_stage()) + len(plan.width_stage(1)) + len(plan.ablation_stage(1, 1))
    assert total == plan.NUM_RUN_CONFIGS


def test_make_config_sets_the_variant():
    args = argparse.Namespace(workdir="/tmp/x", num_train=1280, num_validation=100, num_test=50, epochs=2)
    config = plan.make_config(plan.attention(3, 2, "ablation", gates=False, regularizer=False), 7, args)
    assert (config.attention.depth, config.attention.width, config.attention.gates) == (3, 2, False)
    assert config.attention.regularizer_weight == 0.0 and config.seed == 7
    assert config.schedule.boundaries_epochs == (1.5,) and config.num_epochs == 2
    assert config.dataset.data_dir == "/tmp/x/data" and config.dataset.cluttered_mnist.num_test == 50
    stn = plan.make_config(plan.STN, 0, args)
    assert stn.model.stn is True and stn.attention.depth == 0


def test_aggregate_and_table_against_statistics():
    variant = plan.attention(2, 1, "depth")
    runs = [{"seed": s, "val_accuracy": v, "test_accuracy": t, "train_seconds": 60.0, "eval_seconds": 30.0,
             "accuracy_vs_distractors": {"4": t + 0.01, "64": t - 0.3},
             "hypothesis_accuracy": {"backbone": t - 0.01}, "mean_gates": {"backbone": 0.7}}
            for s, v, t in [(0, 0.90, 0.89), (1, 0.92, 0.90), (2, 0.95, 0.94)]]
    runs[2]["status"] = "diverged: NaN"
    (row,) = report.aggregate([variant, plan.BASELINE], {variant.name: runs})
    assert row["val_accuracy"] == pytest.approx(statistics.mean([0.90, 0.92, 0.95]))
    assert row["test_sd"] == pytest.approx(statistics.stdev([0.89, 0.90, 0.94]))
    assert row["accuracy_vs_distractors"]["64"]["mean"] == pytest.approx(statistics.mean([0.59, 0.60, 0.64]))
    assert set(row["accuracy_vs_distractors"]) == {"4", "64"}
    assert row["diverged"] == 1 and row["minutes_per_run"] == pytest.approx(1.5)
    assert row["backbone_accuracy"] == pytest.approx(0.90) and row["backbone_gate"] == pytest.approx(0.7)
    table = report.markdown_table([row])
    sd = 100 * statistics.stdev([0.89, 0.90, 0.94])
    assert f"| depth | AD=2, AW=1 | 3 (1 diverged) | 92.33 ± {100 * statistics.stdev([0.90, 0.92, 0.95]):.2f} | " \
           f"91.00 ± {sd:.2f} | 92.00 ± {sd:.2f} |  |  | 61.00 ± {sd:.2f} | 90.00 | 0.70 | 1.5 |" in table
    assert report.mean_sd([0.5]) == (0.5, 0.0)


def test_driver_on_fabricated_runs_selects_by_validation_and_restarts(tmp_path, capsys):
    workdir, docs = tmp_path / "study", tmp_path / "docs"
    argv = ["--workdir", str(workdir), "--seeds", "2", "--docs_dir", str(docs)]
    paths = run.main(argv, train=fake_train)
    saved = json.load(open(workdir / "results" / "ablation_results.json"))
    # Fabricated accuracies stop improving after AD=3 (ties go to the first) and grow with AW.
    assert (saved["best_depth"], saved["best_width"]) == (3, 4)
    names = [row["name"] for row in saved["rows"]]
    assert names[-3:] == ["ad3_aw4_sigmoid", "ad3_aw4_nogates", "ad3_aw4_noreg"]
    assert len(names) == plan.NUM_RUN_CONFIGS
    assert all(row["seeds"] == [0, 1] for row in saved["rows"])
    sizes = {"depth": (450, 320), "width": (450, 320), "ablations": (550, 340), "distractors": (450, 320)}
    for key, size in sizes.items():
        read_png(paths[key], size=size)
        assert (docs / os.path.basename(paths[key])).read_bytes() == open(paths[key], "rb").read()
    assert "| width | AD=3, AW=4 | 2 |" in (docs / "ablation_results.md").read_text()
    assert "[24/24]" in capsys.readouterr().out

    def must_not_train(variant, seed, args):
        raise AssertionError(f"{variant.name} seed {seed} was trained again")

    run.main(argv, train=must_not_train)
    assert "done before, skipped" in capsys.readouterr().out


def test_one_real_run_trains_evaluates_and_is_then_skipped(tmp_path):
    args = argparse.Namespace(workdir=str(tmp_path), num_train=128, num_validation=40, num_test=30, epochs=1)
    variant = plan.BASELINE  # the cheapest model to compile: the wiring is the same for all
    record = plan.train_run(variant, 0, args)
    assert record["status"] == "ok" and record["steps"] == 1
    # The reported test accuracy is the best checkpoint's on the 30 test canvases: recomputed here
    # from the checkpoint and the generator's canvases, and equal to the D=8 point of the sweep
    # (the same seed and size give the same test canvases).
    directory = plan.run_dir(str(tmp_path), variant, 0)
    config = plan.make_config(variant, 0, args)
    step, params, stats = restore(config, directory, "best")
    test = canvases.generate_split(canvases.CanvasSpec(num_train=128, num_validation=40, num_test=30), "test")
    model = create_model(config)
    log_probs = jax.jit(model.apply)({"params": params, "batch_stats": stats}, test["image"] / np.float32(255)).log_probs
    correct = int(np.sum(np.argmax(log_probs, -1) == test["label"]))
    assert record["test_accuracy"] == correct / 30
    assert record["accuracy_vs_distractors"]["8"] == record["test_accuracy"]
    assert sorted(record["accuracy_vs_distractors"]) == sorted(str(d) for d in plan.SWEEP)
    read_png(os.path.join(directory, "eval_best", "accuracy_vs_distractors.png"), size=(540, 384))
    assert plan.load_run(str(tmp_path), variant, 0) == record


def test_compare_runs_averages_seeds_with_their_sample_standard_deviation(tmp_path, capsys, monkeypatch):
    from experiments import compare_runs

    sweeps = {"a_s0": {4: 0.90, 8: 0.80}, "a_s1": {4: 0.94, 8: 0.84}, "a_s2": {4: 0.92, 8: 0.86}, "b": {4: 0.5, 8: 0.4}}
    for name, sweep in sweeps.items():
        os.makedirs(tmp_path / name / "eval_best")
        with open(tmp_path / name / "eval_best" / "eval_results.json", "w") as f:
            json.dump({"accuracy_vs_distractors": {str(d): acc for d, acc in sweep.items()}}, f)
    runs = ",".join(str(tmp_path / f"a_s{seed}") for seed in range(3))
    monkeypatch.setattr("sys.argv", ["compare_runs.py", f"attention={runs}", f"baseline={tmp_path / 'b'}",
                                     "--out", str(tmp_path / "out")])
    compare_runs.main()
    table = (tmp_path / "out" / "accuracy_vs_distractors.md").read_text()
    sd4, sd8 = (100 * statistics.stdev(sweeps[f"a_s{s}"][d] for s in range(3)) for d in (4, 8))
    assert f"| attention | 92.00 ± {sd4:.2f} | 83.33 ± {sd8:.2f} |" in table  # sd4 = 2.00, sd8 = 3.06
    assert "| baseline | 50.00 | 40.00 |" in table and table in capsys.readouterr().out
    read_png(tmp_path / "out" / "accuracy_vs_distractors.png", size=(540, 384))
