"""deeppose_fast.codec: the NumPy reference of the crop geometry, checked against the recipe's rules
written out independently (boxes, extensions, flips and rotations computed by hand here)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from deeppose_fast import codec
from deeppose_fast.skeleton import LSP
from deeppose_fast.specs import AugmentSpec

S = 227
PERM = LSP.flip_permutation


def _pose(xy, annotated=None):
    xy = np.asarray(xy, np.float32)
    pose = np.zeros((len(xy), 4), np.float32)
    pose[:, :2] = xy
    pose[:, 2] = 1 if annotated is None else annotated
    pose[:, 3] = pose[:, 2]
    pose[pose[:, 2] == 0, :2] = 0  # the shard convention: x = y = 0 where not annotated
    return pose


def _random_pose(rng, k=14, h=480, w=640):
    xy = np.stack([rng.uniform(0.3 * w, 0.7 * w, k), rng.uniform(0.2 * h, 0.8 * h, k)], 1)
    return _pose(xy)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    joints = rng.uniform(-50, 500, (5, 14, 2))
    box = np.concatenate([rng.uniform(0, 100, (5, 2)), rng.uniform(10, 300, (5, 2))], 1)
    np.testing.assert_allclose(codec.decode(codec.encode(joints, box), box), joints, atol=1e-9)
    # the box corners map to -0.5 and +0.5
    t = codec.encode(np.stack([box[:, :2], box[:, :2] + box[:, 2:]], 1), box)
    np.testing.assert_allclose(t[:, 0], -0.5)
    np.testing.assert_allclose(t[:, 1], 0.5)


def test_eval_crop_is_the_extended_joint_box():
    pose = _pose([[100, 200], [300, 260], [180, 400]])
    g = codec.crop_geometry(pose, (600, 800), codec.eval_draws(1.5), size=S)
    # box 200 x 200 centred at (200, 300), extended 1.5x, inside the image
    np.testing.assert_allclose(g.crop_box, [200 - 150, 300 - 150, 300, 300], atol=1e-4)
    np.testing.assert_array_equal(g.weights, 1)
    expected = (pose[:, :2] - [50, 150]) / 300 - 0.5
    np.testing.assert_allclose(g.targets, expected, atol=1e-6)
    np.testing.assert_allclose(codec.decode(g.targets, g.crop_box), pose[:, :2], atol=1e-3)
    # pure anisotropic scale relative to the region corner, and the region is the box plus 1 px margin
    np.testing.assert_array_equal(g.anchor, [49, 149])
    np.testing.assert_array_equal(g.shape, [302, 302])
    full = codec.full_frame_matrix(g)
    np.testing.assert_allclose(codec.apply_matrix(full, [[50, 150], [350, 450]]), [[0, 0], [S, S]], atol=1e-3)


def test_crop_is_clipped_to_the_image_without_padding():
    pose = _pose([[5, 10], [60, 90]])
    g = codec.crop_geometry(pose, (100, 70), codec.eval_draws(2.0), size=S)
    x0, y0, w, h = g.crop_box
    assert x0 == 0 and y0 == 0 and x0 + w == pytest.approx(70) and y0 + h == pytest.approx(100)
    np.testing.assert_array_equal(g.anchor, [0, 0])
    np.testing.assert_array_equal(g.shape, [70, 100])  # never beyond the image


def test_shift_is_bounded_so_joints_stay_in_the_crop():
    rng = np.random.default_rng(1)
    for draws in codec.sample_draws(rng, 300, AugmentSpec(ext_min=1.0, ext_max=2.0)):
        pose = _random_pose(rng)
        g = codec.crop_geometry(pose, (480, 640), draws, size=S, flip_perm=PERM)
        assert g.weights.all(), draws
        assert np.all(np.abs(g.targets) <= 0.5 + 1e-6)
        # the shift never exceeds 10 % of the crop size
        bx0, by0 = pose[:, :2].min(0)
        bx1, by1 = pose[:, :2].max(0)
        centre = g.crop_box[:2] + g.crop_box[2:] / 2
        assert abs(centre[0] - (bx0 + bx1) / 2) <= 0.1 * g.crop_box[2] + 1e-3
        assert abs(centre[1] - (by0 + by1) / 2) <= 0.1 * g.crop_box[3] + 1e-3


def test_flip_mirrors_about_the_crop_centre_and_swaps_labels():
    rng = np.random.default_rng(2)
    pose = _random_pose(rng)
    d = codec.sample_draws(rng, 1, AugmentSpec(ext_min=1.3, ext_max=1.8))[0]
    d[4] = 0
    plain = codec.crop_geometry(pose, (480, 640), d, size=S, flip_perm=PERM)
    d[4] = 1
    flipped = codec.crop_geometry(pose, (480, 640), d, size=S, flip_perm=PERM)
    np.testing.assert_array_equal(flipped.crop_box, plain.crop_box)
    for k in range(14):  # label k of the flipped sample is the mirrored joint PERM[k]
        j = PERM[k]
        assert flipped.targets[k, 0] == pytest.approx(-plain.targets[j, 0], abs=1e-6)
        assert flipped.targets[k, 1] == pytest.approx(plain.targets[j, 1], abs=1e-6)
    # x -> S - x about the crop: the image's left edge of the crop lands on the right edge
    full = codec.full_frame_matrix(flipped)
    np.testing.assert_allclose(codec.apply_matrix(full, flipped.crop_box[:2]), [S, 0], atol=1e-3)


def test_flip_needs_a_permutation():
    with pytest.raises(ValueError, match="flip_perm"):
        codec.crop_geometry(_pose([[1, 2], [3, 4]]), (10, 10), [1, 1, 0, 0, 1, 0, 1], size=S)


def test_rotation_and_scale_turn_about_the_crop_centre():
    pose = _pose([[100, 100], [300, 300]])
    base = codec.crop_geometry(pose, (400, 400), codec.eval_draws(1.5), size=S)
    d = codec.eval_draws(1.5)
    d[5], d[6] = 30.0, 0.8
    g = codec.crop_geometry(pose, (400, 400), d, size=S)
    p0 = (base.targets + 0.5) * S - S / 2  # positions relative to the centre without rotation
    a = math.radians(30)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * 0.8
    np.testing.assert_allclose((g.targets + 0.5) * S - S / 2, p0 @ rot.T, atol=1e-3)
    # the region covers the source footprint of all four output corners
    inv = np.linalg.inv(np.vstack([codec.full_frame_matrix(g), [0, 0, 1]]))
    corners = np.array([[0, 0, 1], [S, 0, 1], [0, S, 1], [S, S, 1]]) @ inv.T
    lo, hi = g.anchor, g.anchor + g.shape
    inside = np.clip(corners[:, :2], 0, [400, 400])
    assert np.all(inside >= lo) and np.all(inside <= hi)


def test_invalid_and_outside_joints_get_weight_and_target_zero():
    pose = _pose([[100, 100], [200, 220], [0, 0], [150, 160]], annotated=[1, 1, 0, 1])
    d = codec.eval_draws(1.0)
    d[6] = 2.0  # zoom in 2x: the outer joints fall outside the output square
    g = codec.crop_geometry(pose, (300, 300), d, size=S)
    np.testing.assert_array_equal(g.weights, [0, 0, 0, 1])
    np.testing.assert_array_equal(g.targets[:3], 0)


def test_all_joints_invalid_crops_the_whole_image():
    pose = _pose(np.zeros((16, 2)), annotated=np.zeros(16))
    g = codec.crop_geometry(pose, (120, 90), codec.eval_draws(1.7), size=S)
    np.testing.assert_allclose(g.crop_box, [0, 0, 90, 120])
    np.testing.assert_array_equal(g.weights, 0)
    np.testing.assert_array_equal(g.targets, 0)


@pytest.mark.parametrize("xy", [[[50, 60]], [[50, 60], [50, 60]], [[10, 40], [90, 40]]])
def test_degenerate_boxes_give_a_finite_crop(xy):
    g = codec.crop_geometry(_pose(xy), (100, 120), codec.eval_draws(1.5), size=S)
    assert np.isfinite(g.matrix).all() and np.isfinite(g.targets).all()
    w, h = g.crop_box[2:]
    assert w >= 1 and h >= 1 and min(w, h) >= 0.25 * max(w, h) - 1e-4
    np.testing.assert_array_equal(g.weights, 1)


def test_image_smaller_than_the_crop():
    pose = _pose([[0.5, 0.5], [2.5, 1.5]])
    g = codec.crop_geometry(pose, (2, 3), codec.eval_draws(2.0), size=S)
    np.testing.assert_allclose(g.crop_box, [0, 0, 3, 2])
    np.testing.assert_array_equal(g.anchor, [0, 0])
    np.testing.assert_array_equal(g.shape, [3, 2])
    np.testing.assert_allclose(codec.decode(g.targets, g.crop_box), pose[:, :2], atol=1e-4)


def test_joints_on_the_image_border_are_inside():
    pose = _pose([[0, 0], [64, 48], [32, 20]])
    g = codec.crop_geometry(pose, (48, 64), codec.eval_draws(1.2), size=S)
    np.testing.assert_array_equal(g.weights, 1)
    np.testing.assert_allclose(g.targets[:2], [[-0.5, -0.5], [0.5, 0.5]], atol=1e-6)


def test_sample_draws_follow_the_recipe_laws():
    d = codec.sample_draws(np.random.default_rng(3), 4000,
                           AugmentSpec(ext_min=1.2, ext_max=1.6, rotation=10, scale_jitter=0.1))
    assert d.shape == (4000, codec.NUM_DRAWS)
    assert d[:, :2].min() >= 1.2 and d[:, :2].max() <= 1.6
    assert np.abs(d[:, 2:4]).max() <= 1 and set(np.unique(d[:, 4])) == {0.0, 1.0}
    assert 0.45 < d[:, 4].mean() < 0.55
    assert np.abs(d[:, 5]).max() <= 10 and np.abs(d[:, 6] - 1).max() <= 0.1
    plain = codec.sample_draws(np.random.default_rng(3), 10, AugmentSpec(flip=False, shift=0.0))
    assert (plain[:, 4] == 0).all() and (plain[:, 5] == 0).all() and (plain[:, 6] == 1).all()
    assert (plain[:, 2:4] == 0).all()  # no shift: no shift draws, as DALI's


@pytest.mark.parametrize("seed", range(4))
def test_a_scaled_region_gives_the_crop_of_its_source(seed):
    """A region stored at reduced resolution (``scale`` JPEG px per source px, per axis) yields the source
    image's crop: the same crop box, targets and weights, and a matrix that is the source's matrix
    composed with the scaling (``M_jpeg @ diag(s) = M_source``), for random recipes with rotation and
    zoom, flips, and people cut by the image border."""
    rng = np.random.default_rng(seed)
    draws = codec.sample_draws(rng, 40, AugmentSpec(ext_min=1.0, ext_max=2.0, rotation=30, scale_jitter=0.2))
    for i, d in enumerate(draws):
        H, W = int(rng.integers(200, 900)), int(rng.integers(200, 900))
        pose = _random_pose(rng, h=H, w=W)
        if i % 3 == 0:  # a person leaving the image on the left
            pose[:, 0] -= 0.4 * W
            pose[pose[:, 0] < 0, 2:] = 0
            pose[pose[:, 2] == 0, :2] = 0
        h2, w2 = int(rng.integers(20, H + 1)), int(rng.integers(20, W + 1))  # stored JPEG size
        scale = np.float32([w2 / W, h2 / H])
        stored = pose.copy()
        stored[:, :2] = pose[:, :2] * scale
        source = codec.crop_geometry(pose, (H, W), d, size=S, flip_perm=PERM)
        scaled = codec.crop_geometry(stored, (h2, w2), d, size=S, flip_perm=PERM, scale=scale)
        np.testing.assert_allclose(scaled.crop_box, source.crop_box, atol=2e-3)
        np.testing.assert_array_equal(scaled.weights, source.weights)
        np.testing.assert_allclose(scaled.targets * S, source.targets * S, atol=2e-3)
        # the full-frame matrix of the stored JPEG, fed JPEG pixels, equals the source's on source pixels
        corners = np.array([[0, 0], [W, 0], [0, H], [W, H], [0.3 * W, 0.6 * H]], np.float64)
        np.testing.assert_allclose(codec.apply_matrix(codec.full_frame_matrix(scaled), corners * scale),
                                   codec.apply_matrix(codec.full_frame_matrix(source), corners), atol=2e-3)
        # the region to decode covers the source's region, scaled
        assert scaled.anchor[0] <= math.floor(source.anchor[0] * scale[0]) + 1
        assert scaled.anchor[0] + scaled.shape[0] >= min(math.ceil((source.anchor[0] + source.shape[0]) * scale[0]) - 1, w2)


def test_scale_outside_the_image_is_refused():
    with pytest.raises(ValueError, match=r"scale must be in \(0, W\] x \(0, H\]"):
        codec.crop_geometry(_pose([[1, 2], [3, 4]]), (10, 10), codec.eval_draws(1.5), size=S, scale=(0.0, 1.0))


# --- cascade stages: the crop of one joint (joint_crop_geometry) ---

def _cascade_pose():
    """LSP joints of a 600 x 400 image: r_wrist (6) at (210, 140) and r_elbow (7) at (160, 190) lie inside
    the square [150, 250] x [100, 200]; r_ankle (0) at (400, 300) outside it; l_wrist (11) not annotated."""
    xy = np.full((14, 2), 500.0)
    xy[6], xy[7], xy[0] = (210, 140), (160, 190), (400, 300)
    annotated = np.ones(14)
    annotated[11] = 0
    return _pose(xy, annotated)


def test_joint_crop_inside_the_image_weights_only_its_joint():
    pose = _cascade_pose()
    g = codec.joint_crop_geometry(pose, (400, 600), (200, 150), 100, 6, size=S)
    np.testing.assert_allclose(g.crop_box, [150, 100, 100, 100], atol=1e-5)
    want = np.zeros((14, 2))
    want[6] = (60 / 100 - 0.5, 40 / 100 - 0.5)  # (210, 140) in the square
    want[7] = (10 / 100 - 0.5, 90 / 100 - 0.5)  # inside too: a target, but no weight
    np.testing.assert_allclose(g.targets, want, atol=1e-6)
    np.testing.assert_array_equal(g.weights, np.eye(14)[6])
    # region: the square plus 1 px, and a matrix from its pixels onto [0, S]^2
    np.testing.assert_array_equal(g.anchor, [149, 99])
    np.testing.assert_array_equal(g.shape, [102, 102])
    np.testing.assert_allclose(codec.apply_matrix(g.matrix, [[1, 1], [101, 101]]), [[0, 0], [S, S]], atol=1e-4)
    # the refined joint not annotated, or outside its own crop: no weight at all
    assert not codec.joint_crop_geometry(pose, (400, 600), (200, 150), 100, 11, size=S).weights.any()
    assert not codec.joint_crop_geometry(pose, (400, 600), (200, 150), 100, 0, size=S).weights.any()


def test_joint_crop_reaching_outside_the_image_is_not_clipped():
    pose = _pose([[5, 10], [150, 150]])
    g = codec.joint_crop_geometry(pose, (200, 300), (20, 30), 100, 0, size=S)
    # the square [-30, 70] x [-20, 80] keeps its size; the region is its footprint within the image
    np.testing.assert_allclose(g.crop_box, [-30, -20, 100, 100], atol=1e-5)
    np.testing.assert_array_equal(g.anchor, [0, 0])
    np.testing.assert_array_equal(g.shape, [71, 81])
    np.testing.assert_allclose(g.targets[0], [35 / 100 - 0.5, 30 / 100 - 0.5], atol=1e-6)
    np.testing.assert_array_equal(g.weights, [1, 0])
    full = codec.full_frame_matrix(g)
    np.testing.assert_allclose(codec.apply_matrix(full, [[-30, -20], [70, 80]]), [[0, 0], [S, S]], atol=1e-4)
    # wholly outside the image: one border pixel (row or column) to repeat
    left = codec.joint_crop_geometry(pose, (200, 300), (-100, 50), 40, 0, size=S)
    np.testing.assert_array_equal(left.anchor, [0, 29])
    np.testing.assert_array_equal(left.shape, [1, 42])
    corner = codec.joint_crop_geometry(pose, (200, 300), (350, 250), 20, 1, size=S)
    np.testing.assert_array_equal(corner.anchor, [299, 199])
    np.testing.assert_array_equal(corner.shape, [1, 1])
    np.testing.assert_allclose(corner.crop_box, [340, 240, 20, 20], atol=1e-5)


def test_joint_crop_flip_mirrors_and_moves_the_weight_to_the_mirrored_label():
    pose = _cascade_pose()
    plain = codec.joint_crop_geometry(pose, (400, 600), (200, 150), 100, 6, size=S)
    g = codec.joint_crop_geometry(pose, (400, 600), (200, 150), 100, 6, size=S, flip=True, flip_perm=PERM)
    np.testing.assert_array_equal(g.crop_box, plain.crop_box)
    np.testing.assert_array_equal(g.anchor, plain.anchor)
    # the right wrist, mirrored, looks like a left wrist: label 11 carries the weight
    assert PERM[11] == 6
    np.testing.assert_array_equal(g.weights, np.eye(14)[11])
    np.testing.assert_allclose(g.targets[11], [-(60 / 100 - 0.5), 40 / 100 - 0.5], atol=1e-6)
    np.testing.assert_allclose(g.targets[10], [-(10 / 100 - 0.5), 90 / 100 - 0.5], atol=1e-6)  # r_elbow 7
    np.testing.assert_array_equal(g.targets[[6, 7]], 0)  # l_wrist not annotated, l_elbow outside
    # x -> S - x: the square's left edge lands on the output's right edge
    np.testing.assert_allclose(codec.apply_matrix(codec.full_frame_matrix(g), [[150, 100], [250, 200]]),
                               [[S, 0], [0, S]], atol=1e-4)
    with pytest.raises(ValueError, match="flip_perm"):
        codec.joint_crop_geometry(pose, (400, 600), (200, 150), 100, 6, size=S, flip=True)


def test_joint_crop_of_a_scaled_region_is_the_crop_of_its_source():
    """A region stored at (0.5, 0.25) JPEG px per source px: the same crop box, targets and weights as the
    source, the region in the JPEG's pixels (the square [150, 250] x [100, 200] is [75, 125] x [25, 50])."""
    pose = _cascade_pose()
    scale = np.float32([0.5, 0.25])
    stored = pose.copy()
    stored[:, :2] *= scale
    source = codec.joint_crop_geometry(pose, (400, 600), (200, 150), 100, 6, size=S, flip=True, flip_perm=PERM)
    g = codec.joint_crop_geometry(stored, (100, 300), (200, 150), 100, 6, size=S, flip=True, flip_perm=PERM,
                                  scale=scale)
    np.testing.assert_allclose(g.crop_box, source.crop_box, atol=1e-5)
    np.testing.assert_allclose(g.targets, source.targets, atol=1e-6)
    np.testing.assert_array_equal(g.weights, source.weights)
    np.testing.assert_array_equal(g.anchor, [74, 24])
    np.testing.assert_array_equal(g.shape, [52, 27])
    # JPEG pixels through the JPEG's matrix land where source pixels do through the source's
    pts = np.array([[150, 100], [250, 200], [0, 0], [600, 400]], np.float64)
    np.testing.assert_allclose(codec.apply_matrix(codec.full_frame_matrix(g), pts * scale),
                               codec.apply_matrix(codec.full_frame_matrix(source), pts), atol=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_joint_crop_of_scaled_regions_random(seed):
    """The same on random squares (inside, across and beyond the border), flips and anisotropic scales."""
    rng = np.random.default_rng(seed)
    for i in range(60):
        H, W = int(rng.integers(50, 900)), int(rng.integers(50, 900))
        pose = _random_pose(rng, h=H, w=W)
        j = int(rng.integers(14))
        centre = pose[j, :2] + rng.normal(0, 0.3 * min(H, W), 2)
        side = float(rng.uniform(5, 1.5 * max(H, W)))
        flip = bool(i % 2)
        h2, w2 = int(rng.integers(20, H + 1)), int(rng.integers(20, W + 1))
        scale = np.float32([w2 / W, h2 / H])
        stored = pose.copy()
        stored[:, :2] = pose[:, :2] * scale
        source = codec.joint_crop_geometry(pose, (H, W), centre, side, j, size=S, flip=flip, flip_perm=PERM)
        g = codec.joint_crop_geometry(stored, (h2, w2), centre, side, j, size=S, flip=flip, flip_perm=PERM,
                                      scale=scale)
        np.testing.assert_array_equal(g.crop_box, source.crop_box)
        np.testing.assert_array_equal(g.weights, source.weights)
        np.testing.assert_allclose(g.targets * S, source.targets * S, atol=2e-3)
        assert g.weights.sum() <= 1 and g.weights[PERM[j] if flip else j] == source.weights.max()
        # the region covers the square's footprint in the JPEG (within the JPEG), with at most the margin
        # and the rounding to whole pixels beyond it
        size = np.array([w2, h2])
        lo = g.crop_box[:2].astype(np.float64) * scale
        hi = (g.crop_box[:2].astype(np.float64) + g.crop_box[2:]) * scale
        assert (g.anchor >= 0).all() and (g.shape >= 1).all() and (g.anchor + g.shape <= size).all()
        assert (g.anchor <= np.clip(lo, 0, size - 1) + 1e-3).all()
        assert (g.anchor + g.shape >= np.clip(hi, 1, size) - 1e-3).all()
        assert (g.anchor >= np.minimum(lo, size - 1) - 2 - 1e-3).all()
        assert (g.anchor + g.shape <= np.maximum(hi, 1) + 2 + 1e-3).all()


@pytest.mark.parametrize("args, match", [
    (((200, 150), 0.0, 6), "side must be finite and > 0"),
    (((200, 150), -5.0, 6), "side must be finite and > 0"),
    (((200, 150), np.inf, 6), "side must be finite and > 0"),
    (((np.nan, 150), 10.0, 6), "centre must be finite"),
    (((200, 150), 10.0, 14), r"joint must be an integer in \[0, 14\)"),
    (((200, 150), 10.0, -1), r"joint must be an integer in \[0, 14\)"),
    (((200, 150), 10.0, 2.5), r"joint must be an integer in \[0, 14\)"),
])
def test_joint_crop_refuses_bad_draws(args, match):
    with pytest.raises(ValueError, match=match):
        codec.joint_crop_geometry(_cascade_pose(), (400, 600), *args, size=S)
