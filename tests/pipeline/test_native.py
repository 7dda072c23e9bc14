"""The native PoseCrop operator: loads, reports missing or stale builds with the build command, and
matches the NumPy reference (deeppose_fast.codec) within 1e-4 px on random and degenerate inputs."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from deeppose_fast import codec
from deeppose_fast.pipeline import native
from deeppose_fast.skeleton import LSP, MPII
from deeppose_fast.specs import AugmentSpec

S = 227


def _run_operator(samples, size=S, flip_perm=(), shift=0.1, scales=None, region_relative=True):
    """Run fn.pose_crop on a list of (pose (K,4), shape (3,), draws (7,)), with the optional scale input
    (one (2,) per sample); returns per-output lists."""
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
        return tuple(fn.pose_crop(pose, shape, draws, *extra, size=size, shift=shift, flip_perm=list(flip_perm),
                                  region_relative=region_relative))

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
    matrix, anchor, shape, targets, weights, crop_box = _run_operator(samples, flip_perm=perm, scales=scales)
    for i, (pose, hw, d) in enumerate(samples):
        g = codec.crop_geometry(pose, hw, d, size=S, flip_perm=perm, scale=None if scales is None else scales[i])
        assert matrix[i].shape == (2, 3) and targets[i].shape == (skeleton.num_joints, 2)
        np.testing.assert_array_equal(anchor[i], g.anchor, err_msg=f"sample {i}")
        np.testing.assert_array_equal(shape[i], g.shape, err_msg=f"sample {i}")
        np.testing.assert_array_equal(weights[i], g.weights, err_msg=f"sample {i}")
        np.testing.assert_allclose(targets[i] * S, g.targets * S, atol=1e-4, err_msg=f"sample {i}")
        np.testing.assert_allclose(crop_box[i], g.crop_box, atol=1e-4, err_msg=f"sample {i}")
        # the matrix maps the region's pixels to within 1e-4 px of the reference's mapping
        corners = np.array([[0, 0], g.shape, [0, g.shape[1]], [g.shape[0], 0]], np.float64)
        np.testing.assert_allclose(codec.apply_matrix(matrix[i], corners), codec.apply_matrix(g.matrix, corners),
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
