"""The synthetic generator: determinism, drawing vs annotations, the official file layouts, fractions."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from deeppose_fast import skeleton
from deeppose_fast.datasets import synthetic
from deeppose_fast.cli import main
from deeppose_fast.datasets.synthetic import Truth, render

MPII = skeleton.MPII
LSP = skeleton.LSP


def as_list(x):
    """squeeze_me turns 1-element struct arrays into a bare struct: the real MPII file does the same."""
    return list(x) if isinstance(x, np.ndarray) else [x]


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != synthetic.TRUTH_FILE}


# ----------------------------------------------------------------------------------------------
# determinism
def test_same_seed_same_bytes(tmp_path):
    a = synthetic.write_mpii(tmp_path / "a", 6, seed=3, image_size=(200, 150), workers=1)
    b = synthetic.write_mpii(tmp_path / "b", 6, seed=3, image_size=(200, 150), workers=1)
    synthetic.write_mpii(tmp_path / "c", 6, seed=4, image_size=(200, 150), workers=1)
    fa, fb, fc = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(fa) == 7 and fa == fb
    assert fa[synthetic.MPII_MAT] != fc[synthetic.MPII_MAT]
    assert not set(k for k in fa if k.startswith("images/")) & set(fc)  # image names depend on the seed
    np.testing.assert_array_equal(a.joints, b.joints)


def test_pool_gives_the_same_bytes(tmp_path):
    """Per-image seeds: two worker processes write exactly what one process writes."""
    synthetic.write_lspet(tmp_path / "one", 6, seed=1, workers=1)
    synthetic.write_lspet(tmp_path / "two", 6, seed=1, workers=2)
    assert files(tmp_path / "one") == files(tmp_path / "two")


# ----------------------------------------------------------------------------------------------
# drawing
def test_cv2_drawing_uses_the_continuous_pixel_convention():
    """A disc or a segment drawn at continuous (x, y) has its intensity centroid at (x, y), with pixel
    centres at i + 0.5 (a half-pixel error would show as 0.5)."""
    gy, gx = np.mgrid[:40, :40] + 0.5
    for x, y in [(10.5, 20.5), (15.0, 12.0), (17.3, 9.8), (12.25, 14.75)]:
        for r in (3.0, 5.0, 8.0):
            cv = render._Canvas(np.zeros((40, 40, 3), np.uint8))
            cv.circle(np.array([x, y]), r, (255, 255, 255), None, 1, 0)
            w = cv.image[..., 0].astype(float)
            assert abs((w * gx).sum() / w.sum() - x) < 0.05 and abs((w * gy).sum() / w.sum() - y) < 0.05
            ys, xs = np.nonzero(cv.label)  # the label map is not anti-aliased: a coarser match
            assert abs((xs + 0.5).mean() - x) < 0.25 and abs((ys + 0.5).mean() - y) < 0.25
        cv = render._Canvas(np.zeros((40, 40, 3), np.uint8))
        a, b = np.array([x - 6, y - 3]), np.array([x + 6, y + 3])
        cv.line(a, b, 3, (255, 255, 255), None, 1, 0)
        w = cv.image[..., 0].astype(float)
        assert abs((w * gx).sum() / w.sum() - x) < 0.05 and abs((w * gy).sum() / w.sum() - y) < 0.05


def scenes(n, **kw):
    for i in range(n):
        yield synthetic.render_scene(np.random.default_rng([7, i]), 320, 240, 1 + i % 3, **kw)


def test_visible_joints_lie_on_the_drawn_figure():
    """At every visible joint the image differs from the background it was drawn on (the colours are
    chosen to contrast with the local background mean, so nearly always by a wide margin)."""
    diffs = []
    for scene in scenes(40, out_of_frame=0.2):
        diff = np.abs(scene.image.astype(int) - scene.background.astype(int)).max(axis=2)
        for p in scene.people:
            for (x, y), vis in zip(p.joints, p.visible):
                if vis:
                    i, j = int(y), int(x)
                    diffs.append(diff[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max())
    diffs = np.array(diffs)
    assert len(diffs) > 600
    assert diffs.min() > 5
    assert (diffs > 25).mean() > 0.99


def test_occluder_hides_flagged_joints():
    """Joints flagged invisible are covered by something drawn over the person: an occluder or a part
    that does not own the joint; the image there still differs from the background."""
    hidden = 0
    for scene in scenes(30, occluder=1.0):
        for p in scene.people:
            for k in np.nonzero(p.in_frame & ~p.visible)[0]:
                x, y = p.joints[k]
                assert scene.image[int(y), int(x)].tolist() != scene.background[int(y), int(x)].tolist()
                hidden += 1
    assert hidden > 20


def lum(img, mask):
    return (img[mask].astype(float) @ [0.114, 0.587, 0.299]).mean()


def test_left_limbs_lighter_than_right():
    """The person's left and right can be told apart: left limbs are a lighter shade than the right."""
    compared = 0
    for scene in scenes(20, occluder=0.0):
        for pid, _ in enumerate(scene.people, start=1):
            for right, left in ((4, 7), (10, 13)):  # upper arms, thighs (labels of render._PARTS)
                mr, ml = scene.label == pid * 32 + right, scene.label == pid * 32 + left
                if mr.sum() > 30 and ml.sum() > 30:
                    assert lum(scene.image, ml) > lum(scene.image, mr)
                    compared += 1
    assert compared > 40


def test_head_box_matches_head_size():
    for scene in scenes(10):
        for p in scene.people:
            x1, y1, x2, y2 = p.head_box
            head = np.linalg.norm(p.joints[MPII.head_top] - p.joints[MPII.neck])
            assert 0.85 * head < 0.6 * np.hypot(x2 - x1, y2 - y1) < 1.15 * head
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            mid = (p.joints[MPII.head_top] + p.joints[MPII.neck]) / 2
            assert np.hypot(cx - mid[0], cy - mid[1]) < 0.2 * head


# ----------------------------------------------------------------------------------------------
# file formats
def test_lsp_layout(synthetic_lsp_dir):
    truth = Truth.load(synthetic_lsp_dir)
    joints = scipy.io.loadmat(synthetic_lsp_dir / "joints.mat")["joints"]
    n = 12
    assert joints.shape == (3, 14, n)
    names = sorted(p.name for p in (synthetic_lsp_dir / "images").iterdir())
    assert names == [f"im{i:04d}.jpg" for i in range(1, n + 1)]
    # rows x, y (1-based: continuous + 0.5), flag = 1 - visible ("occluded")
    np.testing.assert_allclose(joints[0].T, truth.joints[..., 0] + 0.5, atol=1e-4)
    np.testing.assert_allclose(joints[1].T, truth.joints[..., 1] + 0.5, atol=1e-4)
    np.testing.assert_array_equal(joints[2].T, 1 - truth.visible)
    assert set(np.unique(joints[2])) <= {0.0, 1.0}
    assert 0 < joints[2].mean() < 0.5
    for i in range(n):  # every joint annotated, inside its image
        h, w = cv2.imread(str(synthetic_lsp_dir / "images" / f"im{i + 1:04d}.jpg")).shape[:2]
        assert (w, h) == tuple(truth.image_size[i])
        assert (joints[0, :, i] >= 0.5).all() and (joints[0, :, i] <= w + 0.5).all()
        assert (joints[1, :, i] >= 0.5).all() and (joints[1, :, i] <= h + 0.5).all()


def test_lsp_joints_are_mpii_joints_by_name(synthetic_lsp_dir):
    """LSP's 14 joints are the MPII figure's joints of the same name (LSP neck = MPII upper neck)."""
    for lsp_k, mpii_k in enumerate(synthetic.LSP_FROM_MPII):
        a, b = LSP.joint_names[lsp_k], MPII.joint_names[mpii_k]
        assert a == b or (a, b) == ("neck", "upper_neck")


def test_lspet_layout(synthetic_lspet_dir):
    truth = Truth.load(synthetic_lspet_dir)
    joints = scipy.io.loadmat(synthetic_lspet_dir / "joints.mat")["joints"]
    assert joints.shape == (14, 3, 24)
    assert (synthetic_lspet_dir / "images" / "im00024.jpg").is_file()
    missing = np.isnan(truth.joints[..., 0]).T  # (14, N)
    assert missing.any()
    # not annotated: coordinates <= 0 and flag 0; annotated: 1-based coordinates, flag = visible
    assert (joints[:, 0][missing] <= 0).all() and (joints[:, 1][missing] <= 0).all()
    assert (joints[:, 2][missing] == 0).all()
    np.testing.assert_allclose(joints[:, 0][~missing], (truth.joints[..., 0].T + 0.5)[~missing], atol=1e-4)
    np.testing.assert_array_equal(joints[:, 2], truth.visible.T)
    assert (joints[:, 0][~missing] > 0).all()


def mpii_release(root):
    return scipy.io.loadmat(root / synthetic.MPII_MAT, struct_as_record=False, squeeze_me=True)["RELEASE"]


def test_mpii_layout_and_quirks(synthetic_mpii_dir):
    truth = Truth.load(synthetic_mpii_dir)
    release = mpii_release(synthetic_mpii_dir)
    annolist, img_train = as_list(release.annolist), np.atleast_1d(release.img_train)
    assert len(annolist) == len(img_train) == len(release.single_person) == len(release.act) == 40
    assert set(np.unique(img_train)) == {0.0, 1.0}
    kinds = {"single": 0, "multi": 0, "num": 0, "str": 0, "empty": 0, "no_points": 0}
    parsed = {}  # (image, rect) -> (16, 2) joints with NaN, (16,) visible flag (-1 empty)
    for i, entry in enumerate(annolist):
        name = entry.image.name
        assert len(name) == 13 and name.endswith(".jpg") and (synthetic_mpii_dir / "images" / name).is_file()
        rects = as_list(entry.annorect)
        kinds["single" if not isinstance(entry.annorect, np.ndarray) else "multi"] += 1
        sp = np.atleast_1d(release.single_person[i]).astype(int)
        assert set(sp) <= set(range(1, len(rects) + 1))
        for r, rect in enumerate(rects):
            assert rect.scale > 0 and rect.objpos.x > 0
            if not img_train[i]:  # test images: no head box, no points
                assert set(rect._fieldnames) == {"scale", "objpos"}
                continue
            if isinstance(rect.annopoints, np.ndarray) and rect.annopoints.size == 0:
                kinds["no_points"] += 1
                continue
            joints, flags = np.full((16, 2), np.nan), np.full(16, -2)
            for pt in as_list(rect.annopoints.point):
                k = int(pt.id)
                assert np.isnan(joints[k, 0]), "each id at most once"
                joints[k] = pt.x - 0.5, pt.y - 0.5
                v = pt.is_visible
                if isinstance(v, str):
                    kinds["str"] += 1
                    flags[k] = int(v)
                elif np.size(v) == 0:
                    kinds["empty"] += 1
                    assert k in (MPII.neck, MPII.head_top)
                    flags[k] = -1
                else:
                    kinds["num"] += 1
                    flags[k] = int(v)
            parsed[i, r] = joints, flags, (rect.x1 - 0.5, rect.y1 - 0.5, rect.x2 - 0.5, rect.y2 - 0.5)
    assert all(v > 0 for k, v in kinds.items() if k != "no_points"), kinds

    # the file agrees with the ground truth, person by person
    annotated = np.nonzero(truth.annotated)[0]
    assert len(annotated) == len(parsed)
    for row in annotated:
        joints, flags, box = parsed[truth.image_index[row], truth.rect_index[row]]
        np.testing.assert_allclose(joints, truth.joints[row], atol=1e-4)  # NaN where absent, on both sides
        np.testing.assert_array_equal(flags, truth.visible_flag[row])
        np.testing.assert_allclose(box, truth.head_box[row], atol=1e-4)
        known = flags >= 0
        np.testing.assert_array_equal(flags[known] == 1, truth.visible[row][known])
        assert truth.image_names[row] == annolist[truth.image_index[row]].image.name


def test_fractions_in_intended_ranges(synthetic_mpii_dir, synthetic_lspet_dir, synthetic_lsp_dir):
    mpii = Truth.load(synthetic_mpii_dir)
    assert 1.3 < len(mpii.image_index) / 40 < 2.0  # 1-3 people per image, 1.55 on average
    for truth, (lo_out, hi_out) in ((mpii, (0.003, 0.12)), (Truth.load(synthetic_lspet_dir), (0.003, 0.12)),
                                    (Truth.load(synthetic_lsp_dir), (0.0, 0.0))):
        annotated = ~np.isnan(truth.joints[..., 0])
        out = 1 - annotated.mean()
        occluded = (annotated & ~truth.visible).sum() / annotated.sum()
        assert lo_out <= out <= hi_out, (truth.fmt, out)
        assert 0.03 <= occluded <= 0.3, (truth.fmt, occluded)


def test_writer_errors(tmp_path):
    with pytest.raises(ValueError, match="4 digits"):
        synthetic.write_lsp(tmp_path, 10000)
    with pytest.raises(ValueError, match="unknown format"):
        synthetic.generate(tmp_path, "coco")
    with pytest.raises(ValueError, match="unknown scale"):
        synthetic.generate(tmp_path, "lsp", "huge")
    with pytest.raises(FileNotFoundError, match="no synthetic ground truth"):
        Truth.load(tmp_path)


def test_command_line(tmp_path):
    result = CliRunner().invoke(main, ["synthetic", str(tmp_path / "out"), "--format", "lsp", "--size", "3",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "3 images, 3 people" in result.output
    assert scipy.io.loadmat(tmp_path / "out" / "joints.mat")["joints"].shape == (3, 14, 3)
