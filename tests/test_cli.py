"""train.py and eval.py as a user runs them: a run stopped by Ctrl-C, resumed (in a new
interpreter), killed, and resumed again by the same command past a damaged checkpoint ends
exactly where an uninterrupted run ends, with the same logs; a second run on its workdir is
refused while it trains; eval.py reproduces its numbers; every user error ends with one line and
exit status 2."""

import gc
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from conftest import TINY_FLAGS, TINY_RUN_EPOCHS, read_png, restore, spawn, tensorboard_entries
from test_checkpoint_damage import truncate_data_file, zero_fill
from wrna_jax import checkpoint, evaluate
from wrna_jax.errors import WorkdirError
from wrna_jax.workdir import TrainLock

EPOCHS = TINY_RUN_EPOCHS
TIMING = ("steps_per_sec", "uptime")  # clu's ReportProgress: wall-clock figures


def command(script: str, workdir: str, data_dir: str, *extra: str) -> list[str]:
    return [script, "--config=configs/cluttered_mnist.py", f"--workdir={workdir}",
            f"--config.dataset.data_dir={data_dir}", *TINY_FLAGS, f"--config.num_epochs={EPOCHS}", *extra]


def python_pid(proc: subprocess.Popen) -> int:
    """The pid of the Python process that `spawn` runs under `timeout`."""
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        return int(f.read().split()[0])


def logged_steps(path: str) -> list[int]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line)["step"] for line in f if line.endswith("\n")]


def saved_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 280
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def log_entries(path: str) -> list[tuple[int, str, float]]:
    with open(path) as f:
        return [(r["step"], key, value) for r in map(json.loads, f) for key, value in r.items()
                if key != "step" and key not in TIMING]


def test_ctrl_c_kill_and_the_same_command_end_like_an_uninterrupted_run_and_eval_reproduces_it(
        tiny_run, tmp_path, scripts, capsys, caplog):
    config, whole_dir, whole = tiny_run
    data_dir = config.dataset.data_dir  # the canvases are generated with numpy: nothing is written there
    assert whole["step"] == 32 and whole["interrupted_by"] is None
    workdir = str(tmp_path / "run")
    metrics = os.path.join(workdir, "metrics.jsonl")

    from wrna_jax import cli

    # 1. Ctrl-C, here to train.py's main in this process (the path of `python train.py` without
    # a new interpreter), sent by a thread once the loop has logged: the step finishes, a
    # checkpoint is saved, exit status 130.
    def interrupt():
        deadline = time.monotonic() + 280
        while not logged_steps(metrics) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    capsys.readouterr()
    assert cli.invoke(scripts["train.py"], command("train.py", workdir, data_dir)) == 130
    said = capsys.readouterr()
    interrupted = saved_steps(workdir)[-1]
    assert 4 <= interrupted < 16, interrupted
    assert f"Interrupted (SIGINT) at step {interrupted}: checkpoint saved in" in said.out + said.err
    assert "run the same command again to resume" in said.out + said.err
    assert logged_steps(metrics)[-1] == interrupted  # the partial window is logged

    # 2. Resumed as a user runs it (a new interpreter): while it trains, a second run in its
    # workdir is refused, naming it; then it is killed outright (SIGKILL) after a later
    # checkpoint and more log lines.
    second = spawn(command("train.py", workdir, data_dir))
    wait_for(lambda: logged_steps(metrics)[-1] > interrupted, second, "a log line of the resumed run")
    with pytest.raises(WorkdirError, match=rf"in use by another training run: pid {python_pid(second)} on "):
        with TrainLock(workdir):
            pass
    later = interrupted - interrupted % 8 + 8  # the next evaluation step
    wait_for(lambda: saved_steps(workdir)[-1] >= later and logged_steps(metrics)[-1] >= later + 4,
             second, f"a checkpoint at step {later} and a log line after it")
    killed_pid = python_pid(second)
    os.kill(killed_pid, signal.SIGKILL)
    _, err = second.communicate(timeout=60)
    # A quiet console: no absl INFO lines, no TensorFlow start-up lines (-v 1 shows them).
    assert not re.search(r"^I\d{4} ", err, re.M) and "absl::InitializeLog" not in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    *_, resumed_from, newest = saved_steps(workdir)
    assert logged_steps(metrics)[-1] > newest  # lines the next attempt logs again
    # A save killed half-way leaves orbax's temporary directory behind: ignored on resume.
    os.makedirs(os.path.join(workdir, "checkpoints", f"{newest + 8}.orbax-checkpoint-tmp-1234", "state"))
    # And the newest checkpoint is damaged (tests/test_checkpoint_damage.py has every kind).
    truncate_data_file(os.path.join(workdir, "checkpoints", str(newest)))

    # 3. The same command again, in this process: takes over the dead run's lock, sets the
    # damaged checkpoint aside, resumes from the one before, finishes.
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="absl"):  # --verbosity=0: absl's INFO, as app.run logs it
        assert cli.invoke(scripts["train.py"], command("train.py", workdir, data_dir, "--verbosity=0")) == 0
    said = capsys.readouterr().out + caplog.text
    assert re.search(rf"checkpoint step {newest} in .* is damaged \(.*OUT_OF_RANGE.*\); moved to "
                     rf".*checkpoints_damaged/{newest}", said), said[-3000:]
    assert f"Resumed from step {resumed_from}" in said
    assert re.search(rf"Taking over .*train.lock from pid {killed_pid} on .*ended without releasing it", said)
    _, params_a, stats_a = restore(config, whole_dir)
    step, params_b, stats_b = restore(config, workdir)
    assert step == 32
    # Same program, same data order and augmentation after each resume: bit-identical.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path((params_a, stats_a)),
                            jax.tree.leaves((params_b, stats_b))):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # The logs read as one run: nothing twice, in TensorBoard too, and every value an
    # uninterrupted run logged, but for the window the Ctrl-C cut in two.
    ours = log_entries(metrics)
    assert len({(s, k) for s, k, _ in ours}) == len(ours)
    assert sorted(tensorboard_entries(workdir, exclude=TIMING)) == sorted((s, k) for s, k, _ in ours)
    cut = {interrupted, interrupted - interrupted % 4 + 4}
    assert ([e for e in ours if e[0] not in cut]
            == [e for e in log_entries(os.path.join(whole_dir, "metrics.jsonl")) if e[0] not in cut])
    log = [json.loads(line) for line in open(metrics)]
    lrs = {r["step"]: r["learning_rate"] for r in log if "learning_rate" in r}
    assert lrs[4] == pytest.approx(0.1) and lrs[32] == pytest.approx(0.01)  # x0.1 after epoch 1
    final_val = [r for r in log if "val_accuracy" in r][-1]
    assert final_val["step"] == 32 and final_val["val_accuracy"] == whole["accuracy"]
    assert any("steps_per_sec" in r for r in log)
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert open(os.path.join(workdir, "train.lock")).read() == ""  # released
    read_png(os.path.join(workdir, "training_curves.png"), size=(1320, 330))  # 3 panels of 4 x 3 in

    # eval.py's main in this process too.
    assert cli.invoke(scripts["eval.py"], command("eval.py", workdir, data_dir, "--checkpoint=latest",
                                                  "--split=validation")) == 0
    out_dir = os.path.join(workdir, "eval_latest")
    results = json.load(open(os.path.join(out_dir, "eval_results.json")))
    assert results["checkpoint_step"] == 32 and results["num_examples"] == 96
    assert results["accuracy"] == final_val["val_accuracy"]
    assert set(results["hypothesis_accuracy"]) == {"backbone", "conv5/head0", "conv5/head1",
                                                   "conv4/head0", "conv4/head1"}
    assert abs(sum(results["mean_gates"].values()) - 1) < 1e-5 * len(results["mean_gates"])
    assert "top5_accuracy" in results and set(results["accuracy_vs_distractors"]) == {"4", "16"}
    read_png(os.path.join(out_dir, "attention_masks.png"), size=(800, 510))  # 3 canvases x (1 + 4 heads)
    read_png(os.path.join(out_dir, "accuracy_vs_distractors.png"), size=(540, 384))
    table = open(os.path.join(out_dir, "accuracy_vs_distractors.md")).read()
    assert table.startswith("| model | D=4 | D=16 |")
    assert f"{100 * results['accuracy_vs_distractors']['16']:.2f}" in table

    steps = checkpoint.Checkpoints(workdir).all_steps()  # the latest 2 and the best
    assert steps[-2:] == [24, 32] and len(steps) in (2, 3)
    with pytest.raises(ValueError, match=re.escape(f"--checkpoint='7': use 'best', 'latest' or one of "
                                                   f"the saved steps {steps}")):
        evaluate.evaluate_checkpoint(config, workdir, "7")


@pytest.fixture(scope="module")
def scripts():
    """train.py's and eval.py's `main`, run in this process by `cli.invoke` (the path `cli.run`
    takes, without absl's app.run): the flags they define are parsed anew for each call."""
    import eval as eval_script
    import train as train_script

    return {"train.py": train_script.main, "eval.py": eval_script.main}


def user_error_cases(tmp: str, trained: str, copy: str, data_dir: str,
                     damaged: str) -> list[tuple[str, list[str], str]]:
    """(script, arguments, the error message as a regular expression); `damaged` is a copy of the
    trained run whose checkpoints (steps 24 and 32) are all damaged."""
    base = ["--config=configs/cluttered_mnist.py", f"--workdir={tmp}/run", f"--config.dataset.data_dir={tmp}/data"]
    tiny = ["--config=configs/cluttered_mnist.py", f"--config.dataset.data_dir={data_dir}", *TINY_FLAGS,
            f"--config.num_epochs={EPOCHS}"]
    evaluate_ = [*tiny, f"--workdir={trained}", f"--output_dir={tmp}/out"]
    unwritable = "/proc/wrna_jax_test"  # even root cannot create a directory there
    return [
        ("train.py", [*base, "--config.attention.depth=9"], r"attention.depth \(AD\) = 9, but this backbone has 5"),
        ("train.py", [*base, "--config.attention.width=0"], r"config.attention.width=0 must be a whole number >= 1"),
        ("train.py", [*base, "--config.attention.preset=fancy"], r"Unknown attention.preset 'fancy'; valid choices"),
        ("train.py", [*base, "--config.attention.mask_fn=relu"], r"Unknown attention.mask_fn 'relu'"),
        ("train.py", [*base, "--config.model.backbone=vgg"], r"Unknown model.backbone 'vgg'; valid choices are"),
        ("train.py", [*base, "--config.model.dropout=1.0"], r"config.model.dropout=1.0 must be a probability in \[0, 1\)"),
        ("train.py", [*base, "--config.model.num_classes=7"], r"model.num_classes=7, but cluttered_mnist has 10"),
        ("train.py", [*base, "--config.optimizer.learning_rate=-0.1"],
         r"config.optimizer.learning_rate=-0.1 must be a finite number > 0"),
        ("train.py", [*base, "--config.optimizer.momentum=1.5"], r"momentum=1.5 must be a number in \[0, 1\)"),
        ("train.py", [*base, "--config.optimizer.weight_decay=-0.0001"], r"weight_decay=-0.0001 must be a finite number >= 0"),
        ("train.py", [*base, "--config.num_epochs=0"], r"config.num_epochs=0 must be a number > 0"),
        ("train.py", [*base, "--config.batch_size=0"], r"config.batch_size=0 must be a whole number >= 1"),
        ("train.py", [*base, "--config.batch_size=100", "--config.grad_accum_steps=3"], r"not divisible by 1 device"),
        ("train.py", [*base, "--config.model.bn_group_size=3"], r"bn_group_size=3 does not divide the 100 examples"),
        ("train.py", [*base, "--config.schedule.factor=0.0"], r"config.schedule.factor=0.0 must be a finite number > 0"),
        ("train.py", [*base, "--config.schedule.kind=cosine"], r"config.schedule.kind='cosine' must be one of 'constant'"),
        ("train.py", [*base, "--config.checkpoint_keep=0"], r"config.checkpoint_keep=0 must be a whole number >= 1"),
        ("train.py", [*base, "--config.early_stop_patience=-1"], r"early_stop_patience=-1 must be 0 \(off\)"),
        ("train.py", [*base, "--config.dataset.name=dogs"], r"Unknown dataset.name 'dogs'; valid choices are"),
        ("train.py", [*base, "--config.no_such_field=1"],
         r"--config.no_such_field: config has no field 'no_such_field'; .*configs/default.py"),
        ("train.py", [*base, "--config.attention.dept=3"], r"config.attention has no field 'dept'; did you mean "
                                                           r"config.attention.depth\?"),
        ("train.py", [*base, "--config.batch_size=abc"], r"flag --config.batch_size=abc: invalid literal for int"),
        ("train.py", ["--config=configs/no_such_config.py", f"--workdir={tmp}/run"], r"--config=configs/no_such_config.py: .*No such file"),
        ("train.py", ["--config=configs/cluttered_mnist.py:typo", f"--workdir={tmp}/run"],
         r"Unknown config argument\(s\) \['typo'\]"),
        ("train.py", [f"--config={tmp}/bad_config.py", f"--workdir={tmp}/run"],
         r"--config=.*bad_config.py: the config file is not valid Python: invalid syntax \(line 1 of "
         r".*bad_config.py\); fix that line\.$"),
        ("train.py", [*base[:2], f"--config.dataset.data_dir={tmp}/a_file"],
         r"config.dataset.data_dir=.*a_file is a file, not a directory: point it at a directory"),
        ("train.py", [*base[:2], f"--config.dataset.data_dir={unwritable}/data"],
         r"config.dataset.data_dir=/proc/wrna_jax_test/data cannot be written \(.*\) and does not hold "
         r"cluttered_mnist yet: choose a writable data_dir"),
        ("train.py", ["--config=configs/cluttered_mnist.py"], r"--workdir must have a value other than None"),
        ("train.py", [*base, "stray"], r"unexpected arguments \['stray'\]"),
        ("train.py", [*base[:1], f"--workdir={tmp}/a_file"], r"--workdir=.*a_file is a file, not a directory"),
        ("train.py", [*base[:1], f"--workdir={unwritable}/run"], r"--workdir=/proc/wrna_jax_test/run cannot be written"),
        ("train.py", [*base, "--config.distributed.num_processes=2", "--config.distributed.process_id=5"],
         r"config.distributed.process_id=5: must be in 0..1"),
        ("train.py", ["--config=configs/dogs.py", f"--workdir={tmp}/dogs", "--config.model.dtype=float32",
                      "--config.init_from=/no/such/weights"], r"config.init_from='/no/such/weights': .* does not exist"),
        ("train.py", [*tiny, f"--workdir={tmp}/locked"], r"in use by another training run: pid \d+ on "),
        ("train.py", [*tiny, f"--workdir={copy}", "--config.batch_size=32"],
         r"Cannot resume from step 32 .*: the data order or the learning-rate schedule would change "
         r"\(batch_size: checkpoint 64, config 32\)"),
        ("train.py", [*tiny, f"--workdir={copy}", "--config.seed=1", "--config.optimizer.learning_rate=0.05"],
         r"\(optimizer.learning_rate: checkpoint 0.1, config 0.05; seed: checkpoint 0, config 1\)"),
        ("train.py", [*tiny, f"--workdir={copy}", "--config.attention.width=3"],
         r"Checkpoint step 32 in .* was trained with a different model config: attention.width: checkpoint 2, config 3"),
        ("eval.py", [*evaluate_, "--checkpoint=foo"], r"--checkpoint='foo': use 'best', 'latest' or one of the saved steps"),
        ("eval.py", [*evaluate_, "--checkpoint=999"], r"--checkpoint='999': .*saved steps \[\d+, \d+"),
        ("eval.py", [*evaluate_, "--split=nonsense"], r"--split='nonsense': the dataset has splits"),
        ("eval.py", [*evaluate_, "--config.attention.width=3"], r"different model config: attention.width"),
        ("eval.py", [*evaluate_[:-1], f"--output_dir={unwritable}/out"], r"--output_dir=/proc/wrna_jax_test/out cannot be written"),
        ("eval.py", [*tiny, f"--workdir={tmp}/never_trained"], r"--workdir=.*never_trained does not exist"),
        ("eval.py", [*tiny, f"--workdir={tmp}/empty"], r"No checkpoint in .*empty/checkpoints: train first"),
        ("eval.py", [*tiny, f"--workdir={damaged}", f"--output_dir={tmp}/out", "--checkpoint=32"],
         r"^--checkpoint=32: checkpoint step 32 in .*damaged/checkpoints is damaged \(.+\); skipped\. "
         r"Evaluate an intact step instead: --checkpoint=latest, best or one of \[24\]\.$"),
        ("eval.py", [*tiny, f"--workdir={damaged}", f"--output_dir={tmp}/out", "--checkpoint=latest"],
         r"^No intact checkpoint in .*damaged/checkpoints \(every one is damaged: step 32 \(.+\); step 24 "
         r"\(.+\)\)\. Restore them from a backup, or train again: .*starts afresh\.$"),
        ("train.py", [*tiny, f"--workdir={damaged}"],  # last: it moves the damaged checkpoints aside
         r"^Every checkpoint in .*damaged/checkpoints is damaged \(step 32 \(.+\); step 24 \(.+\)\); "
         r"they were moved to .*damaged/checkpoints_damaged\. Restore them from a backup, or run the "
         r"same command again to train from scratch\.$"),
    ]


def test_user_errors_end_with_one_line_and_status_2_before_any_work(tiny_run, tmp_path, scripts, capsys, caplog,
                                                                     monkeypatch):
    from wrna_jax import cli

    config, trained, _ = tiny_run
    copy, damaged = str(tmp_path / "copy"), str(tmp_path / "damaged")
    shutil.copytree(trained, copy)
    shutil.copytree(trained, damaged)
    for step in ("24", "32"):  # every data file zero-filled: the reads fail with many still in flight
        zero_fill(os.path.join(damaged, "checkpoints", step))
    (tmp_path / "bad_config.py").write_text("def get_config(:\n    pass\n")
    (tmp_path / "a_file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    (tmp_path / "locked").mkdir()
    before = {path: sorted(os.listdir(path)) for path in (trained, copy)}
    cases = user_error_cases(str(tmp_path), trained, copy, config.dataset.data_dir, damaged)
    assert len(cases) >= 25
    failures = []
    # What a user's console gets: an exception Python cannot raise (from another thread, or in a
    # coroutine being collected) printed on stderr, not turned into a pytest warning.
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    with TrainLock(str(tmp_path / "locked")), caplog.at_level(logging.WARNING, logger="asyncio"):
        for script, args, message in cases:
            status = cli.invoke(scripts[script], [script, *args])
            if any(arg.endswith(reads) for arg in args for reads in (trained, copy, damaged)):
                gc.collect()  # checkpoint reads: abandoned coroutines and tasks complain when collected
            err = capsys.readouterr().err
            # One `error:` line first (a few messages go on with instructions), no traceback, and
            # asyncio logged nothing. The regular expressions anchored with ^...$ match the whole
            # stderr: exactly one line.
            if (status != 2 or not err.startswith("error: ") or err.count("error: ") != 1
                    or not re.search(message, err[len("error: "):]) or "Traceback" in err
                    or any(record.name == "asyncio" for record in caplog.records)):
                failures.append(f"{script} {' '.join(args[-2:])}: status {status}, stderr:\n{err[-1500:]}"
                                f"{caplog.text[-1500:]}")
            caplog.clear()
    assert not failures, "\n\n".join(failures)
    assert {path: sorted(os.listdir(path)) for path in (trained, copy)} == before  # nothing written
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()  # no work started
    # Not an error: the finished run asked to train again says so and exits 0, changing nothing.
    steps = saved_steps(copy)
    assert cli.invoke(scripts["train.py"], ["train.py", *command("train.py", copy, config.dataset.data_dir)[1:]]) == 0
    assert re.search(rf"Nothing to do: the run in {copy} is at step 32, and num_epochs={EPOCHS} is 32 steps. "
                     r"Raise --config.num_epochs", capsys.readouterr().out)
    assert saved_steps(copy) == steps


def test_eval_py_console_is_a_short_summary_without_library_logging(tiny_run, tmp_path):
    """eval.py as a user runs it (absl's app.run, a new interpreter): a compact summary on stdout,
    nothing on stderr (no absl INFO, no TensorFlow start-up lines), the full JSON in its file."""
    config, trained, _ = tiny_run
    out_dir = tmp_path / "out"
    proc = spawn(command("eval.py", trained, config.dataset.data_dir, "--checkpoint=latest", f"--output_dir={out_dir}"))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, (out + err)[-3000:]
    assert err == "", err[-3000:]
    lines = out.splitlines()
    assert len(lines) <= CONSOLE_LINE_BUDGET, out
    results = json.load(open(out_dir / "eval_results.json"))
    assert lines[0] == (f"Step 32, test (80 examples): accuracy {100 * results['accuracy']:.2f}%, top-5 "
                        f"{100 * results['top5_accuracy']:.2f}%, loss {results['loss']:.4f}")
    assert re.search(r"^  conv4/head1 +\d+\.\d\d% +0\.\d{3}$", out, re.M)
    assert f"distractors: D=4 {100 * results['accuracy_vs_distractors']['4']:.2f}%" in out
    assert lines[-1].startswith(f"Wrote to {out_dir}: eval_results.json, attention_masks.png")
    assert "confusion" in results and "hypothesis_accuracy" in results


# Lines a demo-sized eval.py may print: the headline, a header and a row per hypothesis (5 on
# cluttered MNIST, up to 10 on the fine-grained recipes), the sweep, the confusions, the files.
CONSOLE_LINE_BUDGET = 16


def test_console_shows_library_info_only_when_asked():
    from absl import logging as absl_logging

    from wrna_jax import console

    assert console.verbosity_in(["train.py", "--workdir=x"]) == 0
    assert console.verbosity_in(["train.py", "-v", "1"]) == 1
    assert console.verbosity_in(["train.py", "--verbosity=2"]) == 2
    assert console.verbosity_in(["pytest", "-v", "tests/"]) == 0

    def record(level: int, path: str) -> logging.LogRecord:
        return logging.LogRecord("absl", level, path, 1, "message", None, None)

    ours, orbax = "/src/wrna_jax/checkpoint.py", "/site-packages/orbax/checkpoint/checkpoint_manager.py"
    quiet, verbose = console.ConsoleFilter(0), console.ConsoleFilter(1)
    assert not quiet.filter(record(logging.INFO, ours)) and quiet.filter(record(logging.WARNING, ours))
    assert not quiet.filter(record(logging.WARNING, orbax)) and quiet.filter(record(logging.ERROR, orbax))
    assert verbose.filter(record(logging.INFO, orbax)) and not verbose.filter(record(logging.DEBUG, ours))
    console.configure(1)
    console.configure(0)
    assert [type(f) for f in absl_logging.get_absl_handler().filters].count(console.ConsoleFilter) == 1


def test_an_empty_distractor_sweep_is_skipped_and_said_so():
    from wrna_jax import evaluate, evaluators

    produced = evaluators.distractor_sweep(None, {"distractors": ()})  # returns before using the context
    assert produced == {"skipped": {"distractor_sweep": "config.evals.distractor_sweep.distractors is empty"}}
    results = {"checkpoint_step": 8, "split": "test", "num_examples": 10, "accuracy": 0.5, "loss": 1.25,
               "hypothesis_accuracy": {"backbone": 0.4}, "mean_gates": {"backbone": 1.0},
               "figures": {}, "results_json": "/out/eval_results.json", **produced}
    assert evaluate.summary(results).splitlines() == [
        "Step 8, test (10 examples): accuracy 50.00%, loss 1.2500",
        "  hypothesis  accuracy  mean gate",
        "  backbone      40.00%      1.000",
        "  distractor_sweep skipped: config.evals.distractor_sweep.distractors is empty",
        "Wrote to /out: eval_results.json"]
