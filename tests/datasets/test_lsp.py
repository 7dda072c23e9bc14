"""LSP / LSPET parsers: both joints.mat layouts, LSP's inverted flag, LSPET's missing joints, the DTF
split (11000 / 1000), and errors that name the file. Files are written here with scipy.io.savemat."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from deeppose_fast import datasets, skeleton
from deeppose_fast.datasets import DatasetError, DatasetWarning, synthetic


def write_lsp(folder, xy, flag):
    """LSP layout: joints 3 x 14 x N, third row = occluded. xy (N, 14, 2) 1-based, flag (N, 14)."""
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.concatenate([xy, flag[..., None]], axis=-1).transpose(2, 1, 0)  # (3, 14, N)
    scipy.io.savemat(str(folder / "joints.mat"), {"joints": arr})


def write_lspet(folder, xy, flag):
    """LSPET layout: joints 14 x 3 x N, third column = visible."""
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.concatenate([xy, flag[..., None]], axis=-1).transpose(1, 2, 0)  # (14, 3, N)
    scipy.io.savemat(str(folder / "joints.mat"), {"joints": arr})


def random_joints(rng, n):
    return rng.uniform(1, 300, size=(n, 14, 2)).round(3), rng.integers(0, 2, size=(n, 14)).astype(float)


def test_lsp_layout_and_inverted_flag(tmp_path):
    rng = np.random.default_rng(0)
    xy, occluded = random_joints(rng, 20)
    write_lsp(tmp_path / "lsp", xy, occluded)
    data = datasets.read("lsp", tmp_path)
    assert data.skeleton is skeleton.LSP and len(data) == 20
    np.testing.assert_allclose(data.joints, xy - 0.5, atol=1e-4)
    np.testing.assert_array_equal(data.visible, occluded == 0)
    assert np.isnan(data.head_box).all()
    np.testing.assert_array_equal(data.image_ids, np.arange(20))
    assert data.image_paths[0] == str(tmp_path / "lsp" / "images" / "im0001.jpg")
    assert data.image_paths[19].endswith("images/im0020.jpg")
    np.testing.assert_array_equal(data.split, ["train"] * 10 + ["test"] * 10)


def test_lspet_layout_visible_flag_and_missing_joints(tmp_path):
    rng = np.random.default_rng(1)
    xy, visible = random_joints(rng, 30)
    missing = rng.random((30, 14)) < 0.2
    xy[missing] = rng.choice([0.0, -1.0, -7.5], size=(missing.sum(), 1))  # LSPET's marker: <= 0
    xy[0] = 0.0  # a person without any joint is skipped
    write_lspet(tmp_path / "lspet_dataset", xy, visible)
    with pytest.warns(DatasetWarning, match="1 people: lspet: no annotated joint"):
        data = datasets.read("lspet", tmp_path)
    assert len(data) == 29 and (data.split == "train").all()
    np.testing.assert_array_equal(data.image_ids, np.arange(1, 30))
    keep_missing = missing[1:]
    assert np.isnan(data.joints[keep_missing]).all()
    np.testing.assert_allclose(data.joints[~keep_missing], xy[1:][~keep_missing] - 0.5, atol=1e-4)
    np.testing.assert_array_equal(data.visible, (visible[1:] == 1) & ~keep_missing)
    assert data.image_paths[0].endswith("lspet_dataset/images/im00002.jpg")
    assert data.skipped == {"lspet: no annotated joint": 1}


def test_lsp_ext_reference_split_sizes(tmp_path):
    rng = np.random.default_rng(2)
    write_lsp(tmp_path / "lsp_dataset_original", *random_joints(rng, 2000))
    write_lspet(tmp_path / "lspet_dataset", *random_joints(rng, 10000))
    data = datasets.read("lsp-ext", tmp_path)
    assert data.counts() == {"train": 11000, "test": 1000}
    # test = LSP images 1001..2000 exactly
    test = data.split == "test"
    assert all(p.endswith(f"im{i:04d}.jpg") for p, i in zip(data.image_paths[test], range(1001, 2001)))
    assert len(np.unique(data.image_ids)) == 12000  # ids unique across both data sets
    lsp_only = datasets.read("lsp", tmp_path)
    assert lsp_only.counts() == {"train": 1000, "test": 1000}
    assert datasets.read("lspet", tmp_path).counts() == {"train": 10000, "test": 0}


def test_single_image_file(tmp_path):
    # MATLAB drops the trailing singleton dimension: 3 x 14 for one image
    xy = np.arange(28, dtype=float).reshape(1, 14, 2) + 1
    folder = tmp_path / "one"
    folder.mkdir()
    scipy.io.savemat(str(folder / "joints.mat"),
                     {"joints": np.concatenate([xy, np.zeros((1, 14, 1))], -1)[0].T})
    data = datasets.read("lsp", folder)
    np.testing.assert_allclose(data.joints[0], xy[0] - 0.5)


def test_nan_coordinates_are_skipped(tmp_path):
    rng = np.random.default_rng(3)
    xy, flag = random_joints(rng, 6)
    xy[2, 5, 0] = np.nan
    write_lsp(tmp_path / "lsp", xy, flag)
    with pytest.warns(DatasetWarning, match="non-finite"):
        data = datasets.read("lsp", tmp_path)
    np.testing.assert_array_equal(data.image_ids, [0, 1, 3, 4, 5])
    assert data.skipped == {"lsp: non-finite joint coordinates": 1}


@pytest.mark.parametrize("case", ["garbage", "short_text", "truncated", "empty", "no_joints_var", "wrong_shape",
                                  "text_joints"])
def test_malformed_files_name_the_file(tmp_path, case):
    folder = tmp_path / "lsp"
    folder.mkdir()
    path = folder / "joints.mat"
    if case == "garbage":
        path.write_bytes(b"\x00\x01 not matlab" * 20)
    elif case == "short_text":  # e.g. a Git LFS pointer in place of the file
        path.write_text("version https://git-lfs.github.com/spec/v1\nsize 12\n")
    elif case in ("truncated", "empty"):
        scipy.io.savemat(str(path), {"joints": np.random.default_rng(0).random((3, 14, 50))})
        path.write_bytes(path.read_bytes()[: 600 if case == "truncated" else 0])
    elif case == "no_joints_var":
        scipy.io.savemat(str(path), {"points": np.zeros((3, 14, 2))})
    elif case == "wrong_shape":
        scipy.io.savemat(str(path), {"joints": np.zeros((3, 16, 5))})
    else:
        scipy.io.savemat(str(path), {"joints": "abc"})
    with pytest.raises(DatasetError) as err:
        datasets.read("lsp", tmp_path)
    assert str(path) in str(err.value)
    bad_file = "not a readable MATLAB file (corrupt, truncated or not a .mat file"
    assert {"garbage": bad_file, "short_text": bad_file, "truncated": bad_file, "empty": bad_file,
            "no_joints_var": "no variable 'joints'",
            "wrong_shape": "(3, 16, 5)", "text_joints": "expected numbers"}[case] in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        datasets.read("lsp", tmp_path / "nowhere")
    rng = np.random.default_rng(4)
    write_lsp(tmp_path / "lsp", *random_joints(rng, 4))
    with pytest.raises(DatasetError, match=r"no LSPET joints.mat \(14 x 3 x N\).*found .*\(lsp\)"):
        datasets.read("lsp-ext", tmp_path)


def test_empty_file_is_an_error(tmp_path):
    write_lsp(tmp_path / "lsp", np.zeros((0, 14, 2)), np.zeros((0, 14)))
    with pytest.raises(DatasetError, match="no usable people"):
        datasets.read("lsp", tmp_path)


def test_against_generator_truth(tmp_path, synthetic_lsp_dir, synthetic_lspet_dir):
    (tmp_path / "lsp_dataset_original").symlink_to(synthetic_lsp_dir)
    (tmp_path / "lspet_dataset").symlink_to(synthetic_lspet_dir)
    lsp_truth, lspet_truth = synthetic.Truth.load(synthetic_lsp_dir), synthetic.Truth.load(synthetic_lspet_dir)
    keep = np.isfinite(lspet_truth.joints[..., 0]).any(1)
    if keep.all():
        data = datasets.read("lsp-ext", tmp_path)
    else:
        with pytest.warns(DatasetWarning):
            data = datasets.read("lsp-ext", tmp_path)
    n = len(lsp_truth.joints)
    np.testing.assert_allclose(data.joints, np.concatenate([lsp_truth.joints, lspet_truth.joints[keep]]), atol=1e-3)
    np.testing.assert_array_equal(data.visible, np.concatenate([lsp_truth.visible, lspet_truth.visible[keep]]))
    assert np.isnan(data.joints[n:]).any()  # LSPET's missing joints came through as NaN
    assert data.counts() == {"train": n // 2 + keep.sum(), "test": n - n // 2}
    names = [p.rsplit("/", 1)[1] for p in data.image_paths]
    assert names == list(lsp_truth.image_names) + list(lspet_truth.image_names[keep])
