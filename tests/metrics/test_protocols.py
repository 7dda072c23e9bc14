"""Protocol definitions (checked against REFERENCE.md's wording, by joint name) and the input checks."""
from __future__ import annotations

import numpy as np
import pytest

from deeppose_fast import skeleton
from deeppose_fast.metrics import protocols


def names(sk, idx):
    return {sk.joint_names[i] for i in idx}


def test_dtf_uses_head_top_to_neck_and_symmetric_groups():
    for ds, neck in (("lsp", "neck"), ("mpii", "upper_neck")):
        p = protocols.get(ds, "dtf")
        sk = p.skeleton
        assert p.normaliser == "joints" and p.norm_scale == 1.0
        assert names(sk, p.norm_joints) == {"head_top", neck}
        assert p.pck_total == "mean" and p.pcp_total == "mean" and p.per_joint_table and p.relaxed_pcp
        want = ["Head", "Neck", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"]
        if ds == "mpii":
            want += ["Thorax", "Pelvis"]
        assert list(p.pck_groups) == want
        assert names(sk, p.pck_groups["Wrist"]) == {"r_wrist", "l_wrist"}
        assert p.pck_joints == tuple(range(sk.num_joints))
    assert protocols.get("lsp", "dtf").primary == "pcp"
    assert protocols.get("mpii", "dtf").primary == "pck"


def test_official_mpii_head_box_drops_pelvis_thorax_and_merges_head():
    p = protocols.get("mpii", "official")
    sk = p.skeleton
    assert p.normaliser == "head_box" and p.norm_scale == 0.6
    assert p.pck_threshold is None and p.pck_total == "pooled" and p.pcp_total is None
    assert list(p.pck_groups) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"]
    assert names(sk, p.pck_groups["Head"]) == {"head_top", "upper_neck"}
    assert len(p.pck_joints) == 14
    assert names(sk, range(16)) - names(sk, p.pck_joints) == {"pelvis", "thorax"}


def test_official_lsp_pooled_pcp_and_pck_at_0_2_shoulder_hip():
    p = protocols.get("lsp", "official")
    sk = p.skeleton
    assert p.pcp_total == "pooled" and not p.relaxed_pcp and p.primary == "pcp"
    assert p.pck_name == "PCK" and p.pck_threshold == 0.2 and p.pck_total == "pooled"
    a, b = p.norm_joints
    assert (sk.joint_names[a], sk.joint_names[b]) == ("l_shoulder", "r_hip")
    assert len(p.pck_joints) == 14


def test_curve_thresholds_grid():
    t = protocols.CURVE_THRESHOLDS
    assert t.shape == (51,) and t[0] == 0.0 and t[-1] == 0.5
    assert t[10] == 0.1 and t[20] == 0.2 and t[50] == 0.5
    np.testing.assert_allclose(np.diff(t), 0.01)


def test_unknown_dataset_or_protocol():
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        protocols.get("coco", "dtf")
    with pytest.raises(ValueError, match="unknown protocol 'pck'.*dtf.*official"):
        protocols.get("lsp", "pck")


def test_stick_array_endpoints():
    for sk in (skeleton.LSP, skeleton.MPII):
        arr = protocols.stick_array(sk)
        assert arr.shape == (10, 4) and arr.dtype == np.int64
        for row, st in zip(arr, sk.sticks):
            assert set(row[:2]) == set(st.a) and set(row[2:]) == set(st.b)
    lsp = protocols.stick_array(skeleton.LSP)
    torso = [i for i, s in enumerate(skeleton.LSP.sticks) if s.name == "torso"][0]
    assert names(skeleton.LSP, lsp[torso, :2]) == {"r_shoulder", "l_shoulder"}
    assert names(skeleton.LSP, lsp[torso, 2:]) == {"r_hip", "l_hip"}
    head = [i for i, s in enumerate(skeleton.LSP.sticks) if s.name == "head"][0]
    assert lsp[head, 0] == lsp[head, 1] == skeleton.LSP.head_top


# ---- input checks ---------------------------------------------------------------------------------

def test_check_poses_accepts_and_normalises_dtypes():
    gt = np.zeros((2, 14, 2), np.float32)
    p, g = protocols.check_poses(gt, gt, 14, "lsp")
    assert p.dtype == g.dtype == np.float32 and p.flags.c_contiguous
    p, g = protocols.check_poses(gt.astype(np.float64), gt, 14, "lsp")  # mixed -> float64
    assert p.dtype == g.dtype == np.float64
    p, g = protocols.check_poses(np.zeros((1, 14, 2), np.int32), np.zeros((1, 14, 2), np.int64), 14)
    assert p.dtype == g.dtype == np.float64
    p, g = protocols.check_poses(gt[:, :, ::-1], gt, 14)  # a non-contiguous view is copied
    assert p.flags.c_contiguous


@pytest.mark.parametrize("pred,gt,match", [
    (np.zeros((3, 16, 2)), np.zeros((3, 16, 2)), r"LSP layout has 14 joints but the arrays have K = 16"),
    (np.zeros((3, 14)), np.zeros((3, 14)), r"shape \(N, K, 2\).*got \(3, 14\)"),
    (np.zeros((3, 14, 3)), np.zeros((3, 14, 3)), r"shape \(N, K, 2\)"),
    (np.zeros((3, 14, 2)), np.zeros((2, 14, 2)), r"shapes differ"),
    (np.zeros((0, 14, 2)), np.zeros((0, 14, 2)), r"N = 0"),
    (np.zeros((2, 14, 2)), np.full((2, 14, 2), np.nan), r"all NaN"),
    (np.zeros((2, 14, 2)), np.full((2, 14, 2), np.inf), r"infinite"),
])
def test_check_poses_value_errors(pred, gt, match):
    with pytest.raises(ValueError, match=match):
        protocols.check_poses(pred, gt, 14, "lsp")


@pytest.mark.parametrize("bad", [np.zeros((2, 14, 2), bool), np.full((2, 14, 2), "a"),
                                 np.zeros((2, 14, 2), complex)])
def test_check_poses_dtype_errors(bad):
    with pytest.raises(TypeError, match="real numbers"):
        protocols.check_poses(bad, np.zeros((2, 14, 2)), 14)


def test_check_head_box():
    with pytest.raises(ValueError, match="needs head_box"):
        protocols.check_head_box(None, 3)
    with pytest.raises(ValueError, match=r"shape \(N, 4\) = \(3, 4\)"):
        protocols.check_head_box(np.zeros((3, 2)), 3)
    with pytest.raises(ValueError, match="all NaN"):
        protocols.check_head_box(np.full((3, 4), np.nan), 3)
    box = protocols.check_head_box(np.ones((3, 4), np.float32), 3)
    assert box.dtype == np.float64


def test_check_visible():
    assert protocols.check_visible(None, (2, 3)) is None
    v = protocols.check_visible(np.array([[1, 0, 1], [0, 0, 1]]), (2, 3))
    assert v.dtype == np.bool_ and v.tolist() == [[True, False, True], [False, False, True]]
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        protocols.check_visible(np.ones((3, 2), bool), (2, 3))
    with pytest.raises(TypeError, match="bool"):
        protocols.check_visible(np.full((2, 3), 2), (2, 3))
    with pytest.raises(TypeError, match="bool"):
        protocols.check_visible(np.full((2, 3), 0.5), (2, 3))


def test_check_thresholds():
    assert protocols.check_threshold(0) == 0.0
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            protocols.check_threshold(bad)
    with pytest.raises(ValueError, match="strictly increasing"):
        protocols.check_thresholds([0.1, 0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        protocols.check_thresholds([])
    with pytest.raises(ValueError, match=">= 0"):
        protocols.check_thresholds([-1, 0.5])
