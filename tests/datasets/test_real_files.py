"""The parsers and prepare on the real files in ../shared/fixtures/real (each folder's README says what it is
and gives the facts checked here): the official LSP and LSPET joints.mat, 107 real LSPET photos, an MPII
file built from real annotation records, and the reference implementation's (deeppose_tf) CSVs and splits.

They live outside the checkout: every test here skips, naming the folder, when it is absent.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from deeppose_fast import datasets
from deeppose_fast.datasets import DatasetWarning, lsp, shards
from deeppose_fast.datasets.prepare import SKIP_MISSING_IMAGE, prepare

REPO = Path(__file__).resolve().parents[2]
REAL = Path(os.environ.get("DEEPPOSE_FAST_FIXTURES", REPO.parent / "shared" / "fixtures")) / "real"
# one float32 step at 1024 px: the parsers keep float32 pixels of float64 file values
ATOL = 6.2e-5


@pytest.fixture(scope="module")
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real fixture files not found in {REAL} (set DEEPPOSE_FAST_FIXTURES to the fixtures folder)")
    return REAL


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """DTF's rows ``image_name, x0, y0, ...``: names and (N, K, 2) raw file coordinates."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows], np.array([r[1:] for r in rows], np.float64).reshape(len(rows), -1, 2)


def assert_same_joints(ours: np.ndarray, reference: np.ndarray) -> None:
    """Joint by joint: ours (continuous pixels) + 0.5 equals the file's 1-based value; NaN exactly where
    the reference writes -1 (it marks each coordinate <= 0, we drop the whole joint)."""
    missing = (reference == -1).any(axis=-1)
    np.testing.assert_array_equal(np.isnan(ours).any(axis=-1), missing)
    np.testing.assert_allclose(ours[~missing] + 0.5, reference[~missing], rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def lsp_ext_root(real, tmp_path_factory) -> Path:
    """The two official folders side by side, as the extracted archives (links to the fixtures)."""
    root = tmp_path_factory.mktemp("lsp-ext")
    (root / "lsp_dataset_original").symlink_to(real / "lsp-original-mobilepose")
    (root / "lspet_dataset").symlink_to(real / "lspet-axelcarlier")
    return root


def test_lsp_official_values(real):
    p = lsp.parse(real / "lsp-original-mobilepose" / "joints.mat")
    assert p["kind"] == "lsp" and p["num_images"] == 2000 and len(p["index"]) == 2000 and not p["skipped"]
    np.testing.assert_allclose(p["joints"][0, 0] + 0.5, [473.953, 552.632], atol=1e-3)  # image 1, right ankle
    assert abs((~p["visible"]).mean() - 0.073) < 0.001  # 7.3 % of the joints are flagged occluded
    assert np.isfinite(p["joints"]).all()


def test_lspet_official_values(real):
    p = lsp.parse(real / "lspet-axelcarlier" / "joints.mat")
    assert p["kind"] == "lspet" and p["num_images"] == 10000 and len(p["index"]) == 10000 and not p["skipped"]
    annotated = np.isfinite(p["joints"]).all(axis=-1)
    # 123,213 joints flagged 1, of which 9 have a coordinate <= 0 (LSPET's "missing" marker wins)
    assert annotated.sum() == 123213 - 9
    assert (p["visible"] == annotated).all()
    assert annotated.all(axis=1).sum() == 3939
    for image, joint in [(24, 13), (712, 13), (2126, 5), (3363, 10), (4837, 13), (6099, 11), (6099, 12),
                         (7393, 6), (8099, 0)]:  # (image number, 0-based joint): im00024's head top
        assert not annotated[image - 1, joint]


def test_lsp_ext_against_the_reference_csvs(real, lsp_ext_root):
    """DTF's split: train = LSPET 1..10000 + LSP 1..1000, test = LSP 1001..2000, joint by joint."""
    data = datasets.read("lsp-ext", lsp_ext_root)
    assert data.counts() == {"train": 11000, "test": 1000} and len(data) == 12000
    ours = {Path(p).name: i for i, p in enumerate(data.image_paths)}
    folder = real / "dtf-csv-mobilepose" / "lsp_ext"
    for split, csv_name in (("train", "train_joints.csv"), ("test", "test_joints.csv")):
        names, joints = read_csv(folder / csv_name)
        index = np.array([ours[n] for n in names])
        assert sorted(index.tolist()) == np.flatnonzero(data.split == split).tolist()
        assert_same_joints(data.joints[index], joints)
    names, joints = read_csv(folder / "train_lsp_small_joints.csv")  # LSP 1..1000
    assert names == [f"im{i:04d}.jpg" for i in range(1, 1001)]
    assert_same_joints(data.joints[:1000], joints)


def test_mpii_records_against_the_reference_csvs(real, tmp_path):
    """The MPII file built from real records: counts and splits as measured, and every person's joints are
    one of DTF's rows for that image (the parser opens no image; ``images/`` only has to exist)."""
    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    (root / "mpii_human_pose_v1_u12_1.mat").symlink_to(real / "mpii-release-derived" / "mpii_human_pose_v1_u12_1.mat")
    with pytest.warns(DatasetWarning, match="59 people: too few annotated joints"):
        data = datasets.read("mpii", root)
    assert len(data) == 2017 and data.counts() == {"train": 1816, "test": 201}
    assert data.skipped == {"too few annotated joints": 59}
    # what read(..., split_mode="image") splits by (parsing the file a second time costs seconds)
    assert (datasets.image_split(data.image_ids) == "test").sum() == 204
    rows: dict[str, list[np.ndarray]] = {}
    for csv_name in ("train_joints.csv", "test_joints.csv"):
        names, joints = read_csv(real / "dtf-csv-mobilepose" / "mpii" / csv_name)
        for name, j in zip(names, joints):
            rows.setdefault(name, []).append(j)
    assert sum(len(v) for v in rows.values()) == 19919  # DTF's people: 17,928 train + 1,991 test
    for path, joints in zip(data.image_paths, data.joints):
        candidates = np.array(rows[Path(path).name])
        match = np.abs(candidates - (joints + 0.5)).max(axis=(1, 2)) <= ATOL
        assert match.sum() == 1, path


def _lspet_folder(real: Path, folder: Path, photos: list[str]) -> Path:
    """An LSPET folder whose joints.mat is a link to the official file and whose images/ holds ``photos``."""
    (folder / "images").mkdir(parents=True)
    for name in photos:
        shutil.copy(real / "lspet-axelcarlier" / "images" / name, folder / "images" / name)
    (folder / "joints.mat").symlink_to(real / "lspet-axelcarlier" / "joints.mat")
    return folder


def test_lspet_shards_give_back_the_joints(real, tmp_path):
    """Prepared from a joints.mat reached through a link: the images of the folder holding the link are
    packed (not the 107 beside the link's target), and each record maps back to the parsed joints."""
    photos = sorted(p.name for p in (real / "lspet-axelcarlier" / "images").glob("im*.jpg"))[:20]
    folder = _lspet_folder(real, tmp_path / "lspet", photos)
    out = tmp_path / "out"
    with pytest.warns(DatasetWarning, match=f"skipped 9980 people: {SKIP_MISSING_IMAGE}"):
        manifest = prepare("lspet", out, source=[folder], workers=1, progress=False)
    assert manifest["splits"]["train"]["count"] == 20 and manifest["splits"]["test"]["count"] == 0
    parsed = lsp.parse(real / "lspet-axelcarlier" / "joints.mat")
    for record in shards.iter_records(out, "train"):
        index = int(record.meta[6])
        assert f"im{index + 1:05d}.jpg" in photos and int(record.meta[7]) == index
        annotated = record.pose[:, 2] > 0
        joints = np.where(annotated[:, None], record.pose[:, :2] + record.meta[4:6], np.nan)
        np.testing.assert_allclose(joints, parsed["joints"][index], atol=1e-3)  # NaN where not annotated
        np.testing.assert_array_equal(record.pose[:, 3] > 0, parsed["visible"][index])


def test_lsp_ext_manifest_keeps_both_checksums(real, tmp_path):
    """LSP's and LSPET's joints.mat are both checksummed (the LSP photos are not in the fixtures)."""
    root = tmp_path / "src"
    (root / "lsp_dataset_original").mkdir(parents=True)
    (root / "lsp_dataset_original" / "joints.mat").symlink_to(real / "lsp-original-mobilepose" / "joints.mat")
    _lspet_folder(real, root / "lspet_dataset", ["im00001.jpg", "im00002.jpg"])
    with pytest.warns(DatasetWarning, match=SKIP_MISSING_IMAGE):
        manifest = prepare("lsp-ext", tmp_path / "out", source=[root], workers=1, progress=False)
    digest = {key: hashlib.sha256((real / folder / "joints.mat").read_bytes()).hexdigest()
              for key, folder in (("lsp_dataset_original/joints.mat", "lsp-original-mobilepose"),
                                  ("lspet_dataset/joints.mat", "lspet-axelcarlier"))}
    assert manifest["sources"] == digest
    assert manifest["splits"]["train"]["count"] == 2
