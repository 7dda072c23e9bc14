"""The native PoseCrop and JointCrop operators: load, report missing or stale builds with the build command,
and match the NumPy reference (deeppose_fast.codec) within 1e-4 px on random and degenerate inputs."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from deeppose_fast import codec
from deeppose_fast.pipeline import native
from deeppose_fast.skeleton import LSP, MPII
from deeppose_fast.specs import AugmentSpec

S = 227


def _run_operator(samples, size=S, flip_perm=(), shift=0.1, scales=None, region_relative=True, op="pose_crop"):
    """Run fn.pose_crop (or ``op="joint_crop"``, which has no shift) on a list of (pose (K,4), shape (3,),
    draws (7,) or (5,)), with the optional scale input (one (2,) per sample); returns per-output lists."""
    from nvidia.dali import fn, pipeline_def

    native.load()
    n = len(samples)

    @pipeline_def(batch_size=n, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipe():
        pose = fn.external_source(lambda: [s[0] for s in samples], batch=True)
        shape = fn.external_source(lambda: [np.asarray(s[1], np.int64) for s in samples], batch=True)
        draws = fn.external_source(lambda: [s[2] for s in samples], batch=True)
        extra = () if scales is None else (
            fn.external_source(lambda: [np.asarray(c, np.float32) for c in scales], batch=True),)
        kwargs = {"shift": shift} if op == "pose_crop" else {}
        return tuple(getattr(fn, op)(pose, shape, draws, *extra, size=size, flip_perm=list(flip_perm),
                                     region_relative=region_relative, **kwargs))

    p = pipe()
    p.build()
    outs = p.run()
    return [[np.array(o[i]) for i in range(n)] for o in outs]


def _random_samples(rng, n, k):
    samples = []
    draws = codec.sample_draws(rng, n, AugmentSpec(ext_min=0.8, ext_max=2.2, rotation=40, scale_jitter=0.3))
    for i in range(n):
        h, w = int(rng.integers(1, 900)), int(rng.integers(1, 900))
        pose = np.zeros((k, 4), np.float32)
        pose[:, 0] = rng.uniform(-0.1 * w, 1.1 * w, k)
        pose[:, 1] = rng.uniform(-0.1 * h, 1.1 * h, k)
        case = i % 6
        if case == 1:  # all joints invalid
            pose[:, 2] = 0
        elif case == 2:  # degenerate: one valid joint
            pose[:, 2] = 0
            pose[int(rng.integers(k)), 2] = 1
        elif case == 3:  # joints on the image border
            pose[:, 2] = 1
            pose[:, 0] = rng.choice([0.0, float(w)], k)
        elif case == 4:  # all joints on one point
            pose[:, :2] = pose[0, :2]
            pose[:, 2] = 1
        else:
            pose[:, 2] = rng.random(k) < 0.8
        pose[:, 3] = pose[:, 2]
        pose[pose[:, 2] == 0, :2] = 0
        d = draws[i].copy()
        if i % 4 == 0:  # half the samples without rotation/scale (the default recipe)
            d[5], d[6] = 0.0, 1.0
        samples.append((pose, (h, w, 3), d))
    return samples


@pytest.mark.parametrize("scaled", [False, True], ids=["full-resolution", "scaled-regions"])
@pytest.mark.parametrize("skeleton", [LSP, MPII], ids=["lsp", "mpii"])
def test_operator_matches_the_numpy_reference(skeleton, scaled):
    rng = np.random.default_rng(7)
    perm = skeleton.flip_permutation
    samples = _random_samples(rng, 240, skeleton.num_joints)
    samples.append((samples[0][0], (2, 3, 3), codec.eval_draws(2.0)))  # image smaller than the crop
    # regions stored at reduced resolution (anisotropic), and one at full resolution
    scales = ([np.float32(rng.uniform(0.2, 1.0, 2)) for _ in samples[:-2]] + [np.float32([1, 1])] * 2
              if scaled else None)
    outputs = _run_operator(samples, flip_perm=perm, scales=scales)
    for i, (pose, hw, d) in enumerate(samples):
        g = codec.crop_geometry(pose, hw, d, size=S, flip_perm=perm, scale=None if scales is None else scales[i])
        _assert_sample_matches(outputs, i, g, skeleton.num_joints)


def _assert_sample_matches(outputs, i, g: codec.Geometry, num_joints: int, region_matrix: bool = True):
    """Sample ``i`` of the operator's ``outputs`` equals the reference geometry ``g``: anchor, shape and
    weights exactly, targets and crop box within 1e-4 px and (``region_matrix``) the matrix maps the
    region's pixels to within 1e-4 px of the reference's mapping."""
    matrix, anchor, shape, targets, weights, crop_box = (o[i] for o in outputs)
    assert matrix.shape == (2, 3) and targets.shape == (num_joints, 2)
    np.testing.assert_array_equal(anchor, g.anchor, err_msg=f"sample {i}")
    np.testing.assert_array_equal(shape, g.shape, err_msg=f"sample {i}")
    np.testing.assert_array_equal(weights, g.weights, err_msg=f"sample {i}")
    np.testing.assert_allclose(targets * S, g.targets * S, atol=1e-4, err_msg=f"sample {i}")
    np.testing.assert_allclose(crop_box, g.crop_box, atol=1e-4, err_msg=f"sample {i}")
    if region_matrix:
        corners = np.array([[0, 0], g.shape, [0, g.shape[1]], [g.shape[0], 0]], np.float64)
        np.testing.assert_allclose(codec.apply_matrix(matrix, corners), codec.apply_matrix(g.matrix, corners),
                                   atol=1e-4, err_msg=f"sample {i}")


def test_operator_rejects_bad_input_with_a_clear_message():
    pose = np.zeros((14, 3), np.float32)  # wrong: needs (K, 4)
    with pytest.raises(RuntimeError, match=r"pose must have shape \(K, 4\)"):
        _run_operator([(pose, (10, 10, 3), codec.eval_draws(1.5))])
    pose = np.zeros((14, 4), np.float32)
    with pytest.raises(RuntimeError, match="flip_perm has 16 entries but the pose has 14"):
        _run_operator([(pose, (10, 10, 3), codec.eval_draws(1.5))], flip_perm=MPII.flip_permutation)
    with pytest.raises(RuntimeError, match=r"scale must be in \(0, W\] x \(0, H\]"):
        _run_operator([(pose, (10, 10, 3), codec.eval_draws(1.5))], scales=[(0.5, 0.0)])
    with pytest.raises(RuntimeError, match=r"scale must have shape \(2,\)"):
        _run_operator([(pose, (10, 10, 3), codec.eval_draws(1.5))], scales=[(0.5,)])


def test_missing_library_names_the_build_command(tmp_path):
    with pytest.raises(native.NativeBuildError, match="missing.*pip install --no-build-isolation --no-deps -e ."):
        native.check_build(tmp_path / "pose_crop.so")


def test_stale_library_is_detected(tmp_path):
    built = native.check_build()  # the real build matches the checkout's sources
    for rel in native.SOURCES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(native.SOURCE_ROOT / rel, tmp_path / rel)
    assert native.check_build(built, source_root=tmp_path) == built
    with open(tmp_path / native.SOURCES[1], "a") as f:
        f.write("// edited\n")
    with pytest.raises(native.NativeBuildError, match="stale.*scripts/setup.sh"):
        native.check_build(built, source_root=tmp_path)


def test_library_without_a_source_hash_is_rejected(tmp_path):
    fake = tmp_path / "pose_crop.so"
    fake.write_bytes(b"\x7fELF not a real library")
    with pytest.raises(native.NativeBuildError, match="carries no PoseCrop source hash"):
        native.check_build(fake)


def test_whole_image_matrix_is_the_full_frame_matrix():
    """``region_relative=False`` (for a JPEG decoded whole): the matrix takes the JPEG's own pixels, i.e.
    the reference's region matrix with the region offset undone (``codec.full_frame_matrix``), scaled
    regions included; the other outputs are unchanged."""
    rng = np.random.default_rng(5)
    perm = LSP.flip_permutation
    samples = _random_samples(rng, 60, LSP.num_joints)
    scales = [np.float32(rng.uniform(0.3, 1.0, 2)) for _ in samples]
    region = _run_operator(samples, flip_perm=perm, scales=scales)
    whole = _run_operator(samples, flip_perm=perm, scales=scales, region_relative=False)
    for i, (pose, hw, d) in enumerate(samples):
        g = codec.crop_geometry(pose, hw, d, size=S, flip_perm=perm, scale=scales[i])
        corners = np.array([[0, 0], [hw[1], 0], [0, hw[0]], [hw[1], hw[0]]], np.float64)
        want = codec.full_frame_matrix(g)
        # float32 entries: each mapped coordinate carries a few ulps of |m00| W + |m01| H + |m02|
        bound = 1e-3 + 4 * np.finfo(np.float32).eps * (np.abs(want[:, :2]) @ [hw[1], hw[0]] + np.abs(want[:, 2]))
        diff = np.abs(codec.apply_matrix(whole[0][i], corners) - codec.apply_matrix(want, corners))
        assert (diff <= bound).all(), (i, diff, bound)
        for out in range(1, 6):
            np.testing.assert_array_equal(whole[out][i], region[out][i])


def test_every_operator_source_is_hashed():
    """A source file left out of the hash would let a stale build load: native.SOURCES is every file of
    csrc/pose_crop, in CMakeLists.txt's order, and the library is built from each .cc of it."""
    root = native.SOURCE_ROOT
    on_disk = {p.relative_to(root).as_posix() for p in (root / "csrc/pose_crop").iterdir() if p.is_file()}
    assert set(native.SOURCES) == on_disk
    cmake = (root / "CMakeLists.txt").read_text()
    listed = re.search(r"set\(POSE_CROP_SOURCES([^)]*)\)", cmake).group(1).split()
    assert tuple(listed) == native.SOURCES
    compiled = re.search(r"add_library\(pose_crop SHARED([^)]*)\)", cmake).group(1).split()
    assert sorted(compiled) == sorted(f for f in native.SOURCES if f.endswith(".cc"))


# --- JointCrop: the cascade stage's crop of one joint ---

def _random_joint_samples(rng, n, skeleton, scaled=False):
    """``(samples, scales)``: samples (pose (K, 4), shape (3,), draws (5,)) of cascade crops, squares of side
    ``sigma * diam`` about an estimate of a joint, some reaching beyond the image or wholly outside it, tiny
    and huge sides, refined joints not annotated, half of them flipped; ``scales`` (one (2,) per sample, or
    None unless ``scaled``): regions stored at reduced resolution, the draws in their source frame."""
    k = skeleton.num_joints
    samples, scales = [], []
    for i in range(n):
        h, w = int(rng.integers(1, 900)), int(rng.integers(1, 900))  # the stored JPEG
        scale = np.float32(rng.uniform(0.2, 1.0, 2)) if scaled else np.float32([1, 1])
        src_w, src_h = w / scale[0], h / scale[1]
        pose = np.zeros((k, 4), np.float32)
        pose[:, 0] = rng.uniform(-0.1 * w, 1.1 * w, k)
        pose[:, 1] = rng.uniform(-0.1 * h, 1.1 * h, k)
        pose[:, 2] = rng.random(k) < 0.8
        joint = int(rng.integers(k))
        xy = np.where(pose[:, 2:3] > 0, pose[:, :2] / scale, np.nan)  # the source frame
        diam = skeleton.torso_diameter(xy)
        diam = float(diam) if np.isfinite(diam) and diam > 0 else 0.3 * max(src_h, src_w)
        side = diam * rng.uniform(0.2, 1.5)
        centre = pose[joint, :2] / scale + rng.uniform(-0.4, 0.4, 2) * side  # an estimate within the square
        case = i % 6
        if case == 1:  # centred near or beyond a random image corner
            centre = np.array([rng.choice([0.0, src_w]), rng.choice([0.0, src_h])]) + rng.normal(0, 0.3 * side, 2)
        elif case == 2:  # wholly outside the image
            centre = np.array([rng.choice([-1.0, 1.0]) * (side + src_w), rng.uniform(-src_h, 2 * src_h)])
        elif case == 3:  # tiny or huge
            side = float(rng.choice([0.3, 3.0 * max(src_h, src_w)]))
        elif case == 4:  # the refined joint not annotated
            pose[joint, 2] = 0
        pose[:, 3] = pose[:, 2]
        pose[pose[:, 2] == 0, :2] = 0
        flip = float(rng.random() < 0.5)
        samples.append((pose, (h, w, 3), np.float32([centre[0], centre[1], side, flip, joint])))
        scales.append(scale)
    return samples, (scales if scaled else None)


def _joint_reference(pose, hw, d, perm, scale=None):
    return codec.joint_crop_geometry(pose, hw, d[:2], d[2], int(d[4]), size=S, flip=bool(d[3] > 0.5),
                                     flip_perm=perm, scale=scale)


@pytest.mark.parametrize("region_relative", [True, False], ids=["region", "whole-jpeg"])
@pytest.mark.parametrize("scaled", [False, True], ids=["full-resolution", "scaled-regions"])
@pytest.mark.parametrize("skeleton", [LSP, MPII], ids=["lsp", "mpii"])
def test_joint_crop_operator_matches_the_numpy_reference(skeleton, scaled, region_relative):
    rng = np.random.default_rng(11)
    perm = skeleton.flip_permutation
    samples, scales = _random_joint_samples(rng, 240, skeleton, scaled)
    outputs = _run_operator(samples, flip_perm=perm, scales=scales, region_relative=region_relative,
                            op="joint_crop")
    matrix, weights = outputs[0], outputs[4]
    weighted = 0
    for i, (pose, hw, d) in enumerate(samples):
        g = _joint_reference(pose, hw, d, perm, None if scales is None else scales[i])
        _assert_sample_matches(outputs, i, g, skeleton.num_joints, region_matrix=region_relative)
        if not region_relative:  # whole-JPEG pixels: the reference, region offset undone (float32 entries)
            corners = np.array([[0, 0], [hw[1], 0], [0, hw[0]], [hw[1], hw[0]]], np.float64)
            want = codec.full_frame_matrix(g)
            bound = 1e-4 + 4 * np.finfo(np.float32).eps * (np.abs(want[:, :2]) @ [hw[1], hw[0]]
                                                           + np.abs(want[:, 2]))
            diff = np.abs(codec.apply_matrix(matrix[i], corners) - codec.apply_matrix(want, corners))
            assert (diff <= bound).all(), (i, diff, bound)
        weighted += int(weights[i].sum())
    assert 0.2 * len(samples) < weighted < 0.8 * len(samples)  # the cases cover weighted and unweighted crops


def test_joint_crop_region_warps_like_the_whole_image():
    """The region to decode holds every pixel the warp reads, and its edges are the image's where the
    square leaves the image: warping the region slice (matrix relative to it) gives the crop that warping
    the whole image gives (``region_relative=False``), border pixels repeated alike."""
    from nvidia.dali import fn, pipeline_def, types

    native.load()
    rng = np.random.default_rng(3)
    samples, _ = _random_joint_samples(rng, 30, LSP)
    yy, xx = np.mgrid[0:900, 0:900]  # a smooth picture: a sub-pixel shift changes it by little
    picture = np.stack([127 + 120 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], -1)
    images = [picture[:hw[0], :hw[1]].astype(np.uint8) for _, hw, _ in samples]
    perm = list(LSP.flip_permutation)

    @pipeline_def(batch_size=len(samples), num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipe():
        image = fn.external_source(lambda: images, batch=True, layout="HWC")
        pose = fn.external_source(lambda: [s[0] for s in samples], batch=True)
        draws = fn.external_source(lambda: [s[2] for s in samples], batch=True)
        shape = image.shape(dtype=types.INT64)
        m_region, anchor, region, *_ = fn.joint_crop(pose, shape, draws, size=S, flip_perm=perm)
        m_whole, *_ = fn.joint_crop(pose, shape, draws, size=S, flip_perm=perm, region_relative=False)
        part = fn.slice(image, anchor, region, normalized_anchor=False, normalized_shape=False)
        warp = dict(size=[S, S], inverse_map=False, dtype=types.FLOAT, interp_type=types.INTERP_LINEAR)
        return fn.warp_affine(part, matrix=m_region, **warp), fn.warp_affine(image, matrix=m_whole, **warp)

    p = pipe()
    p.build()
    from_region, from_whole = (np.stack([np.array(o[i]) for i in range(len(samples))]) for o in p.run())
    # the picture changes by at most about 14 levels per px: 0.1 levels is a 1/100 px disagreement
    np.testing.assert_allclose(from_region, from_whole, atol=0.1)


@pytest.mark.parametrize("draws, match", [
    ([200, 150, 0, 0, 6], "side must be finite and > 0, got 0"),
    ([200, 150, -3, 1, 6], "side must be finite and > 0, got -3"),
    ([200, 150, np.inf, 0, 6], "side must be finite and > 0, got inf"),
    ([np.nan, 150, 10, 0, 6], "centre must be finite"),
    ([200, 150, 10, 0, 14], r"joint must be an integer in \[0, 14\), got 14"),
    ([200, 150, 10, 0, -1], r"joint must be an integer in \[0, 14\), got -1"),
    ([200, 150, 10, 0, 2.5], r"joint must be an integer in \[0, 14\), got 2.5"),
    ([200, 150, 10, 0, 6, 0, 1], r"JointCrop: sample 0: draws must have shape \(5,\)"),
])
def test_joint_crop_operator_rejects_bad_draws(draws, match):
    pose = np.zeros((14, 4), np.float32)
    with pytest.raises(RuntimeError, match=match):
        _run_operator([(pose, (400, 600, 3), np.float32(draws))], op="joint_crop")


def test_joint_crop_operator_rejects_bad_shapes():
    draws = np.float32([200, 150, 10, 0, 6])
    with pytest.raises(RuntimeError, match=r"JointCrop: sample 0: pose must have shape \(K, 4\)"):
        _run_operator([(np.zeros((14, 3), np.float32), (400, 600, 3), draws)], op="joint_crop")
    pose = np.zeros((14, 4), np.float32)
    with pytest.raises(RuntimeError, match="JointCrop: sample 0: flip_perm has 16 entries but the pose has 14"):
        _run_operator([(pose, (400, 600, 3), draws)], flip_perm=MPII.flip_permutation, op="joint_crop")
    with pytest.raises(RuntimeError, match=r"JointCrop: sample 0: scale must have shape \(2,\)"):
        _run_operator([(pose, (400, 600, 3), draws)], scales=[(0.5,)], op="joint_crop")
    with pytest.raises(RuntimeError, match=r"JointCrop: sample 0: scale must be in \(0, W\] x \(0, H\]"):
        _run_operator([(pose, (400, 600, 3), draws)], scales=[(0.5, 0.0)], op="joint_crop")
    with pytest.raises(RuntimeError, match=r"JointCrop: sample 0: image shape must be \(H, W\[, C\]\)"):
        _run_operator([(pose, (400,), draws)], op="joint_crop")
