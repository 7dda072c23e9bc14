"""`deeppose-fast train`: what it cannot do well is refused before any work, in one line naming the file
or folder and the fix (exit code 1, no traceback): a damaged data folder, a run folder that holds another
run or cannot be written, a non-finite setting; a diverging run exits non-zero and keeps its last good
checkpoint."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from deeppose_fast import checkpoint
from deeppose_fast.cli import main

# A tiny network on the real input pipeline: a step takes well under a second on a CPU.
TINY = ["--preset", "synthetic-cpu", "--input-size", "67", "--width", "0.25", "--fc-units", "32",
        "--batch-size", "4", "--max-steps", "1", "--eval-every", "0", "--max-minutes", "0", "--no-progress",
        "--num-threads", "1", "--tf-threads", "1"]


@pytest.fixture
def prepared(synthetic_shards):
    """The session's data set prepared by `prepare` with its defaults (the reference recipe: no rotation)."""
    return synthetic_shards


@pytest.fixture
def data(prepared, tmp_path):
    """A copy of the prepared set, for a test to damage."""
    return shutil.copytree(prepared, tmp_path / "data")


def train(*args):
    return CliRunner().invoke(main, ["train", *TINY, *map(str, args)])


def error_line(r) -> str:
    """The one error line of a refused command (exit code 1, no traceback)."""
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), f"uncaught {r.exception!r}"  # else a traceback
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, r.output
    return lines[0]


def test_invalid_manifest_is_one_line_and_nothing_is_written(data, tmp_path):
    (data / "manifest.json").write_text("{not json")
    line = error_line(train("--data", data, "--out", tmp_path / "run"))
    assert f"{data / 'manifest.json'}: not valid JSON" in line and "deeppose-fast prepare" in line
    assert not (tmp_path / "run").exists()


def test_missing_shard_is_one_line(data, tmp_path):
    (data / "train-00000.tar").unlink()
    line = error_line(train("--data", data, "--out", tmp_path / "run"))
    assert f"{data / 'train-00000.tar'}: shard listed in" in line and "is missing" in line
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_a_run_is_refused_and_left_alone(prepared, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "ckpt-00003000").mkdir(parents=True)
    (out / "config.json").write_text('{"preset": "synthetic-cpu"}')
    (out / "train.log").write_text("training synthetic-cpu ...\n")
    line = error_line(train("--data", prepared, "--out", out))
    assert f"{out}: already holds a training run" in line
    assert "continue it with --resume, or choose a new --out" in line
    assert (out / "config.json").read_text() == '{"preset": "synthetic-cpu"}'
    assert (out / "train.log").read_text() == "training synthetic-cpu ...\n"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "train.log"]


def test_an_unwritable_out_is_one_line(prepared, tmp_path):
    (tmp_path / "a-file").write_text("")
    line = error_line(train("--data", prepared, "--out", tmp_path / "a-file" / "run"))
    assert f"{tmp_path / 'a-file' / 'run'}: cannot write the run there" in line and "--out" in line


def test_an_infinite_learning_rate_is_refused(prepared, tmp_path):
    line = error_line(train("--data", prepared, "--out", tmp_path / "run", "--conv-lr", "inf"))
    assert "conv_lr must be a finite number, got inf" in line
    assert not (tmp_path / "run").exists()


def test_a_huge_learning_rate_exits_non_zero_and_keeps_the_last_good_checkpoint(prepared, tmp_path):
    # It exited 0, having written a checkpoint whose conv, batch-norm and fc6 weights were all NaN.
    out = tmp_path / "run"
    r = train("--data", prepared, "--out", out, "--conv-lr", "1e8", "--max-steps", "8", "--ckpt-every", "1",
              "--log-every", "100")
    assert r.exit_code == 3, r.output
    assert "training diverged:" in r.output and "holds NaN or infinity" in r.output
    assert "Traceback" not in r.output
    for found in checkpoint.list_checkpoints(out / "checkpoints"):
        ck = checkpoint.load(found)
        for group, arrays in ck.arrays.items():
            assert all(np.isfinite(v).all() for _, v in arrays if v.dtype.kind == "f"), (found, group)


def test_a_recipe_needing_more_resolution_than_stored_is_refused(prepared, tmp_path):
    # prepared for a 227 px input (the default): a 300 px network would see upsampled regions
    line = error_line(train("--data", prepared, "--out", tmp_path / "run", "--input-size", "300"))
    assert f"{prepared / 'manifest.json'}:" in line and "input size 300" in line
    assert "--resolution 300" in line and "deeppose-fast prepare" in line
    assert not (tmp_path / "run").exists()


def test_a_recipe_whose_crops_reach_outside_the_stored_region_is_refused(prepared, tmp_path):
    # prepared for the reference recipe (no rotation): rotated crops would have repeated-pixel borders
    line = error_line(train("--data", prepared, "--out", tmp_path / "run", "--rotation", "30"))
    assert f"{prepared / 'manifest.json'}:" in line and "rotation 30" in line
    assert "--max-rotation 30" in line and "deeppose-fast prepare" in line
    assert not (tmp_path / "run").exists()  # refused before any work
