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


def test_variant_names_round_trip_and_bad_names_are_refused():
    for variant in plan.depth_stage() + plan.width_stage(4) + plan.ablation_stage(4, 2):
        named = plan.variant_named(variant.name)
        assert (named.name, named.label, named.stage) == (variant.name, variant.label, "comparison")
    with pytest.raises(ValueError, match="ad<D>_aw<W>"):
        plan.variant_named("ad4_aw2_noreg_sigmoid")  # tags in another order


def test_compared_models_run_seed_by_seed_and_a_run_diverged_before_a_checkpoint_is_counted(tmp_path, capsys):
    order = []

    def train(variant, seed, args):
        order.append((variant.name, seed))
        if variant.name == "stn" and seed == 1:
            record = {"name": "stn", "seed": 1, "status": "diverged: NaN", "val_accuracy": None,
                      "test_accuracy": None, "steps": 0, "train_seconds": 1.0, "eval_seconds": 0.0}
            os.makedirs(plan.run_dir(args.workdir, variant, seed))
            with open(os.path.join(plan.run_dir(args.workdir, variant, seed), plan.SUMMARY_FILE), "w") as f:
                json.dump(record, f)
            return record
        return fake_train(variant, seed, args)

    argv = ["--workdir", str(tmp_path), "--seeds", "2", "--models", "baseline,ad4_aw2,stn"]
    paths = run.main(argv, train=train)
    assert order == [("baseline", 0), ("ad4_aw2", 0), ("stn", 0), ("baseline", 1), ("ad4_aw2", 1), ("stn", 1)]
    rows = {row["name"]: row for row in json.load(open(paths["table_json"]))["rows"]}
    assert rows["stn"]["seeds"] == [0] and rows["stn"]["diverged"] == 1
    assert rows["ad4_aw2"]["test_accuracy"] == pytest.approx(statistics.mean(
        _fabricated(plan.variant_named("ad4_aw2"), s) - 0.001 for s in (0, 1)))
    assert "| comparison | STN + CNN (AD=0) | 1 (1 diverged) |" in open(paths["table_md"]).read()
    read_png(paths["distractors"], size=(450, 320))
    run.main(argv, train=lambda *a: pytest.fail("trained again"))  # every run, the diverged one too, is done
    with pytest.raises(SystemExit):
        run.main(["--workdir", str(tmp_path), "--models", "baseline,ad0_aw1x"])
    assert "--models: model 'ad0_aw1x'" in capsys.readouterr().err


def test_one_real_run_on_device_data(tmp_path):
    args = argparse.Namespace(workdir=str(tmp_path), num_train=128, num_validation=40, num_test=30, epochs=1,
                              input="device")
    record = plan.train_run(plan.BASELINE, 0, args)
    assert record["status"] == "ok" and record["steps"] == 1
    directory = plan.run_dir(str(tmp_path), plan.BASELINE, 0)
    config = plan.make_config(plan.BASELINE, 0, args)
    step, params, stats = restore(config, directory, "best")
    test = canvases.generate_split(canvases.CanvasSpec(num_train=128, num_validation=40, num_test=30), "test")
    log_probs = jax.jit(create_model(config).apply)({"params": params, "batch_stats": stats},
                                                    test["image"] / np.float32(255)).log_probs
    assert record["test_accuracy"] == np.mean(np.argmax(log_probs, -1) == test["label"])
    assert record["accuracy_vs_distractors"]["8"] == record["test_accuracy"]
    assert sorted(record["accuracy_vs_distractors"]) == sorted(str(d) for d in plan.SWEEP)
    assert plan.load_run(str(tmp_path), plan.BASELINE, 0) == record
