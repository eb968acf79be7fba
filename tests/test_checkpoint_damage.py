"""A damaged checkpoint is named, set aside by training (moved, never deleted) or skipped by
evaluation (which writes nothing), and the newest intact checkpoint is used instead: for each
way a checkpoint is found damaged in practice. train.py resuming past one, end to end, is in
tests/test_cli.py."""

import os
import re
import shutil

import jax
import numpy as np
import pytest

from conftest import input_shape, restore
from wrna_jax import checkpoint, evaluate, parallel
from wrna_jax.errors import DamagedCheckpointError
from wrna_jax.models import create_model
from wrna_jax.state import create_train_state


def _data_files(step_dir: str) -> list[str]:
    """The OCDBT data files of the state item (in its `d/` directories): the arrays. Orbax's
    concurrent writers split them over one or more files, differently from run to run."""
    files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(step_dir, "state"))
             if os.path.basename(root) == "d" for name in names]
    assert files, f"no OCDBT data file under {step_dir}/state"
    return files


def truncate_data_file(step_dir: str) -> None:
    """Keeps the first 5% of every data file, so some of the parameters are cut whatever file
    and order orbax wrote them in: evaluation, which reads only parameters and statistics, meets
    the damage too (cutting only the largest file was not enough: on some runs it held only the
    optimiser's momentum)."""
    for path in _data_files(step_dir):
        os.truncate(path, os.path.getsize(path) // 20)


def zero_fill(step_dir: str) -> None:
    for path in _data_files(step_dir):
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(bytes(size))


def _write(relative: str):
    def damage(step_dir: str) -> None:
        with open(os.path.join(step_dir, relative), "w") as f:
            f.write("{not json")
    return damage


def _remove(relative: str):
    def damage(step_dir: str) -> None:
        path = os.path.join(step_dir, relative)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return damage


# kind -> (how the latest step is damaged, what the report says about it)
DAMAGE = {
    "data file truncated": (truncate_data_file, r"is damaged \(.+\)"),
    "data file zero-filled": (zero_fill, r"is damaged \(.+\)"),
    "manifest deleted": (_remove("state/manifest.ocdbt"), r"state/manifest.ocdbt is missing"),
    "state item deleted": (_remove("state"), r"its 'state' item is missing"),
    "metrics garbage": (_write("metrics/metrics"), r"metrics/metrics is not valid JSON"),
    "config garbage": (_write("config/metadata"), r"config/metadata is not valid JSON"),
    "config item deleted": (_remove("config"), r"its 'config' item is missing"),
}


def listing(directory: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(root, name), directory)
                  for root, _, names in os.walk(directory) for name in names)


@pytest.fixture
def damaged_run(tiny_run, tmp_path, request):
    """(config, pristine workdir, copy whose latest step 32 is damaged, the report's regex)."""
    config, finished, _ = tiny_run
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    assert checkpoint.Checkpoints(workdir, read_only=True).all_steps()[-2:] == [24, 32]
    damage, report = DAMAGE[request.param]
    damage(os.path.join(workdir, "checkpoints", "32"))
    return config, finished, workdir, report


def assert_same_variables(a, b) -> None:
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("damaged_run", list(DAMAGE), indirect=True)
def test_evaluation_skips_a_damaged_latest_checkpoint_says_so_and_writes_nothing(damaged_run, capsys):
    config, finished, workdir, report = damaged_run
    before = listing(workdir)
    model, mesh = create_model(config), parallel.create_mesh(config.num_devices)
    shape = input_shape(config)
    restorer = evaluate.Restorer(config, workdir, "latest")
    try:
        step, variables = restorer.variables(model, shape, mesh)
    finally:
        restorer.close()
    assert step == 24
    out = capsys.readouterr().out
    assert f"Checkpoint step 32 in {os.path.join(workdir, 'checkpoints')} " in out
    assert "evaluating step 24 instead (--checkpoint=latest)" in out
    assert re.search(report, out), out
    _, params, stats = restore(config, finished, "24")
    assert_same_variables((params, stats), (variables["params"], variables["batch_stats"]))
    assert listing(workdir) == before
    with pytest.raises(DamagedCheckpointError, match=r"--checkpoint=32: checkpoint step 32 .*is damaged"):
        evaluate.Restorer(config, workdir, "32").variables(model, shape, mesh)


# Damage found by reading (the data file; zero-filling takes the same path) and found from the
# files alone before orbax reads them (the five structural kinds share that path; evaluation
# above checks each kind's report).
@pytest.mark.parametrize("damaged_run", ["data file truncated", "config garbage"], indirect=True)
def test_training_moves_a_damaged_latest_checkpoint_aside_and_resumes_from_the_newest_intact(damaged_run):
    config, finished, workdir, report = damaged_run
    damaged_files = listing(os.path.join(workdir, "checkpoints", "32"))
    model = create_model(config)
    target = create_train_state(config, model, input_shape(config),
                                parallel.create_mesh(config.num_devices), steps_per_epoch=8)
    ckpts = checkpoint.Checkpoints(workdir)
    try:
        step, state = ckpts.restore_newest(target)
    finally:
        ckpts.close()
    assert step == 24 and int(state.step) == 24
    assert list(ckpts.damaged) == [32]
    assert re.search(report, ckpts.damaged[32])
    moved = os.path.join(workdir, checkpoint.DAMAGED_DIR, "32")
    assert ckpts.damaged[32].endswith(f"moved to {moved}")
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "32"))
    assert listing(moved) == damaged_files  # kept whole, for a post-mortem
    _, params, stats = restore(config, finished, "24")
    assert_same_variables((params, stats), (state.params, state.batch_stats))


@pytest.mark.parametrize("damaged_run", ["manifest deleted"], indirect=True)
def test_when_every_checkpoint_is_damaged_both_say_so_and_training_starts_afresh_only_when_rerun(damaged_run):
    config, _, workdir, _ = damaged_run
    for name in os.listdir(os.path.join(workdir, "checkpoints")):
        if name.isdigit() and name != "32":  # the fixture damaged 32 already
            _remove("state/manifest.ocdbt")(os.path.join(workdir, "checkpoints", name))
    with pytest.raises(DamagedCheckpointError, match=r"No intact checkpoint in .* \(every one is damaged: .*step 24 "
                                                     r"\(state/manifest.ocdbt is missing\)"):
        evaluate.Restorer(config, workdir, "best")
    ckpts = checkpoint.Checkpoints(workdir)
    try:
        with pytest.raises(DamagedCheckpointError, match=r"^Every checkpoint in .* is damaged \((step \d+ \(.+\)(; )?){2,}\); "
                                                         r"they were moved to .*run the same command again to "
                                                         r"train from scratch\.$"):
            ckpts.check_not_all_damaged()
    finally:
        ckpts.close()
    assert not checkpoint.has_checkpoints(workdir)  # the next run starts afresh
    assert sorted(os.listdir(os.path.join(workdir, checkpoint.DAMAGED_DIR)))[:2] == ["24", "32"]
