"""`deeppose-fast show`: a contact sheet PNG of training (or evaluation) crops with skeletons drawn,
and one clear error line for a folder that is not a prepared data set or has a damaged shard."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from deeppose_fast.cli import main
from deeppose_fast.testing import dots


@pytest.fixture(scope="module")
def dot_dir(tmp_path_factory):
    return dots.make_dot_dataset(tmp_path_factory.mktemp("dots"), num_train=12, num_test=5, seed=2)


def run(*args):
    return CliRunner().invoke(main, ["show", *map(str, args)])


def test_show_writes_a_contact_sheet(dot_dir, tmp_path):
    out = tmp_path / "sheet.png"
    r = run(dot_dir, "--out", out, "--count", 6, "--columns", 3, "--input-size", 64, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert str(out) in r.output
    sheet = cv2.imread(str(out))
    pad = 2  # viz.contact_sheet's default
    assert sheet.shape == (2 * (64 + pad) + pad, 3 * (64 + pad) + pad, 3)
    # skeleton sticks are drawn in viz's side colours: BGR red (right side) and blue (left side)
    red = (np.abs(sheet.astype(int) - (40, 40, 230)).sum(-1) < 30).sum()
    blue = (np.abs(sheet.astype(int) - (230, 120, 40)).sum(-1) < 30).sum()
    assert red > 50 and blue > 50


def test_show_eval_crops(dot_dir, tmp_path):
    out = tmp_path / "eval.png"
    r = run(dot_dir, "--split", "test", "--eval", 1.5, "--count", 8, "--input-size", 48, "--out", out,
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == 8 * (48 + 2) + 2  # 5 people on one row of 8 columns
    assert "(5 crops of 48 x 48" in r.output
    # the five test people, each once: five different drawn tiles, then three blank slots
    tiles = [sheet[2:50, 2 + c * 50:50 + c * 50] for c in range(8)]
    assert sheet.shape[0] == 48 + 2 * 2
    assert [bool((t != 255).any()) for t in tiles] == [True] * 5 + [False] * 3
    assert len({t.tobytes() for t in tiles[:5]}) == 5


def test_show_on_a_folder_that_is_not_prepared(tmp_path):
    r = run(tmp_path / "nothing", "--device", "cpu")
    assert r.exit_code == 1
    assert "not prepared" in r.output and "Traceback" not in r.output


def test_show_names_a_truncated_shard(dot_dir, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(dot_dir, out)
    tar = out / "train-00000.tar"
    with open(tar, "r+b") as f:
        f.truncate(tar.stat().st_size // 2)
    r = run(out, "--device", "cpu", "--out", tmp_path / "sheet.png")
    assert r.exit_code == 1
    assert f"{tar}: truncated or corrupt" in r.output and "deeppose-fast prepare" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A data set prepared by `prepare` for the reference recipe (no rotation)."""
    out = tmp_path_factory.mktemp("synthetic")
    r = CliRunner().invoke(main, ["prepare", "synthetic", "--size", "8", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def test_show_refuses_crops_outside_the_stored_region(prepared, tmp_path):
    # rotated crops of a region stored for upright ones have repeated-pixel borders: refused before any work
    r = run(prepared, "--rotation", 30, "--device", "cpu", "--out", tmp_path / "sheet.png")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert str(prepared / "manifest.json") in r.output and "rotation 30" in r.output
    assert "--max-rotation 30" in r.output and "prepare" in r.output
    assert not (tmp_path / "sheet.png").exists()
    r = run(prepared, "--device", "cpu", "--out", tmp_path / "sheet.png")  # the recipe it was prepared for
    assert r.exit_code == 0, r.output
