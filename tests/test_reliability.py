"""The pieces that keep a run whole: the workdir lock, the log truncation on resume, the
signal handling, and which config a checkpoint is checked against."""

import json
import logging
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, tensorboard_entries
from wrna_jax import checkpoint, evaluate, logs
from wrna_jax.errors import WorkdirError
from wrna_jax.workdir import LOCK_FILE, TrainLock, check_writable


def test_a_held_lock_refuses_a_second_run_naming_the_holder_and_is_released_on_exit(tmp_path):
    workdir = str(tmp_path)
    with TrainLock(workdir):
        holder = json.load(open(tmp_path / LOCK_FILE))
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        # flock belongs to an open file: a second open, even in this process, is refused.
        with pytest.raises(WorkdirError, match=rf"{workdir} is in use by another training run: pid "
                                               rf"{os.getpid()} on {holder['host']}, started .*another --workdir"):
            TrainLock(workdir).__enter__()
    assert (tmp_path / LOCK_FILE).read_text() == ""
    with TrainLock(workdir):  # free again
        pass


def test_a_lock_left_by_a_dead_run_is_taken_over_with_a_warning(tmp_path, caplog):
    # What a SIGKILLed run leaves: its record, and no flock (the kernel dropped it with the process).
    dead = {"host": "gpu7", "pid": 4242, "started": "2026-11-30T10:00:00+00:00", "command": "train.py"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(dead))
    with caplog.at_level(logging.WARNING), TrainLock(str(tmp_path)):
        assert json.load(open(tmp_path / LOCK_FILE))["pid"] == os.getpid()
    assert any(f"Taking over {tmp_path / LOCK_FILE} from pid 4242 on gpu7, started 2026-11-30T10:00:00+00:00 "
               "(train.py), which ended without releasing it" in r.getMessage() for r in caplog.records)


def test_check_writable_names_the_flag_and_the_problem(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkdirError, match=r"--workdir=.*file is a file, not a directory"):
        check_writable(str(tmp_path / "file"), "--workdir")
    with pytest.raises(WorkdirError, match=r"--output_dir=.*file/sub cannot be written \(Not a directory\)"):
        check_writable(str(tmp_path / "file" / "sub"), "--output_dir")
    check_writable(str(tmp_path / "new" / "dir"), "--workdir")
    assert os.listdir(tmp_path / "new" / "dir") == []  # the probe file is gone


def test_truncate_after_drops_later_and_cut_short_entries_from_jsonl_and_tensorboard(tmp_path):
    workdir = str(tmp_path)
    writer = logs.metric_writer(workdir)
    for step in (4, 8, 12, 16):
        writer.write_scalars(step, {"loss": 1.0 / step, "accuracy": step / 16})
    writer.flush()
    writer.close()
    metrics = tmp_path / logs.METRICS_FILE
    with open(metrics, "a") as f:
        f.write('{"step": 20, "loss": 0.0')  # a line a kill cut short
    logs.truncate_after(workdir, 8)
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [4, 8]
    events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
    assert len(events) == 1
    assert sorted(tensorboard_entries(workdir)) == [(4, "accuracy"), (4, "loss"), (8, "accuracy"), (8, "loss")]
    logs.truncate_after(workdir, 0)  # a run starting afresh over an old log
    assert metrics.read_text() == ""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_the_next_step_and_a_second_ctrl_c_ends_the_process_at_once(signame):
    # In a child process: a second Ctrl-C ends its process with os._exit.
    script = f"""
import os, signal, sys, time
from wrna_jax.distributed import Preemption
before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
preemption = Preemption(manager=None)
assert not preemption.reached(1) and preemption.signal is None
os.kill(os.getpid(), signal.{signame})
assert preemption.reached(2) and preemption.signal == "{signame}", preemption.signal
print("stopped", flush=True)
if "{signame}" == "SIGINT":
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)
    sys.exit("a second Ctrl-C did not end the process")
preemption.close()
# The handlers from before, whatever they were (a parent that ignores SIGINT passes SIG_IGN on).
assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before, before
print("restored", flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})
    if signame == "SIGINT":
        assert proc.returncode == 130 and proc.stdout == "stopped\n", proc.stderr[-2000:]
        assert "Second Ctrl-C: stopping now without saving; the latest saved checkpoint is kept" in proc.stderr
    else:
        assert proc.returncode == 0 and proc.stdout == "stopped\nrestored\n", proc.stderr[-2000:]


def test_the_model_config_is_read_from_the_checkpoint_not_from_the_editable_config_json(tiny_run, tmp_path):
    config, finished, _ = tiny_run
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    path = os.path.join(workdir, "config.json")
    edited = json.load(open(path))
    edited["attention"]["width"] = 3
    json.dump(edited, open(path, "w"))
    assert checkpoint.Checkpoints(workdir, read_only=True).saved_config(32)["attention"]["width"] == 2
    restorer = evaluate.Restorer(config, workdir, "latest")  # the true config still fits
    assert restorer.step == 32
    restorer.close()
    wrong = config.copy_and_resolve_references()
    wrong.attention.width = 3  # what config.json now claims
    with pytest.raises(ValueError, match=r"Checkpoint step 32 .*different model config: attention.width: "
                                         r"checkpoint 2, config 3"):
        evaluate.Restorer(wrong, workdir, "latest")


def test_best_and_last_validation_are_selected_from_metrics_file(tmp_path, monkeypatch):
    from wrna_jax import metrics_file

    path = str(tmp_path / metrics_file.METRICS_FILE)
    metrics_file.append(path, 1, {"train_loss": 2.0})
    assert metrics_file.selection(path) is None  # no validation yet
    for step, accuracy in ((8, 0.5), (16, 0.75), (24, 0.25), (32, 0.75), (40, 0.5)):
        metrics_file.append(path, step, {"val_accuracy": accuracy, "train_loss": 1.0})
    with open(path, "a") as f:
        f.write("\n")
    assert metrics_file.selection(path) == {"best_val_accuracy": 0.75, "best_step": 32,  # the later of equals
                                            "last_val_accuracy": 0.5, "last_step": 40}
    replaced = []
    monkeypatch.setattr(os, "replace", lambda a, b, replace=os.replace: replaced.append((a, b)) or replace(a, b))
    assert metrics_file.truncate_after(path, 24) == 3  # 32, 40 and the blank line
    assert replaced == [(path + ".tmp", path)]  # written aside, then renamed: a kill leaves a whole file
    assert metrics_file.selection(path) == {"best_val_accuracy": 0.75, "best_step": 16,
                                            "last_val_accuracy": 0.25, "last_step": 24}
    assert metrics_file.truncate_after(path, 24) == 0 and not os.path.exists(path + ".tmp")
    assert len(replaced) == 1  # nothing to drop: the file is left as it is
