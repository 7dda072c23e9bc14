"""The counting kernels (Numba and the NumPy baseline): hand-computed cases, an independent loop reference
on random data, bit-identical counts between backends on tie-heavy integer data, small-N safety, and the
on-disk cache."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deeppose_fast import skeleton
from deeppose_fast.metrics import kernels, numpy_ref, protocols



class _ParallelKernels:
    """``kernels`` with the multi-threaded path forced even for a handful of people."""

    def __getattr__(self, name):
        return getattr(kernels, name)

    def fused_stats(self, *args):
        old = kernels.PARALLEL_MIN_PEOPLE
        kernels.PARALLEL_MIN_PEOPLE = 0
        try:
            return kernels.fused_stats(*args)
        finally:
            kernels.PARALLEL_MIN_PEOPLE = old


BACKENDS = {"numba": kernels, "numba-parallel": _ParallelKernels(), "numpy": numpy_ref}
REPO = Path(__file__).resolve().parents[2]
CURVE = protocols.CURVE_THRESHOLDS


def _arr(x, dtype=np.float64):
    return np.ascontiguousarray(np.asarray(x, dtype=dtype))


def _two_stick_layout():
    """4 joints, two sticks: (0)-(1), and midpoint(0, 1)-midpoint(2, 3)."""
    return np.array([[0, 0, 1, 1], [0, 1, 2, 3]], dtype=np.int64)


# ---- independent reference: plain loops, written from REFERENCE.md ---------------------------------

def loop_counts(pred, gt, visible, norm, thr, curve, sticks, alpha):
    """Counts with Python loops over people, joints and sticks (math.hypot, ratios as divisions)."""
    n, k = len(gt), len(gt[0])
    pck_ok, pck_n = [0] * k, [0] * k
    curve_ok = [[0] * len(curve) for _ in range(k)]
    excluded = 0
    s = len(sticks)
    strict, relaxed, stick_n = [0] * s, [0] * s, [0] * s

    def annotated(i, j):
        x, y = float(gt[i][j][0]), float(gt[i][j][1])
        return not (math.isnan(x) or math.isnan(y)) and (visible is None or bool(visible[i][j]))

    def err(p, g):
        e = math.hypot(p[0] - g[0], p[1] - g[1])
        return math.inf if math.isnan(e) else e

    def mid(arr, i, a, b):
        return ((float(arr[i][a][0]) + float(arr[i][b][0])) / 2,
                (float(arr[i][a][1]) + float(arr[i][b][1])) / 2)

    for i in range(n):
        if norm is not None:
            nv = float(norm[i])
            if math.isnan(nv) or nv <= 0 or math.isinf(nv):
                excluded += 1
            else:
                for j in range(k):
                    if not annotated(i, j):
                        continue
                    e = err(pred[i][j].astype(float), gt[i][j].astype(float)) / nv
                    pck_n[j] += 1
                    pck_ok[j] += e <= thr
                    for q, t in enumerate(curve):
                        curve_ok[j][q] += e <= t
        for q, (a0, a1, b0, b1) in enumerate(sticks):
            if not all(annotated(i, j) for j in (a0, a1, b0, b1)):
                continue
            ga, gb = mid(gt, i, a0, a1), mid(gt, i, b0, b1)
            ea = err(mid(pred, i, a0, a1), ga)
            eb = err(mid(pred, i, b0, b1), gb)
            length = math.hypot(ga[0] - gb[0], ga[1] - gb[1])
            stick_n[q] += 1
            strict[q] += ea <= alpha * length and eb <= alpha * length
            relaxed[q] += (ea + eb) / 2 <= alpha * length
    return dict(pck_correct=pck_ok, pck_total=pck_n, curve_correct=curve_ok, excluded=excluded,
                pcp_strict=strict, pcp_relaxed=relaxed, pcp_total=stick_n)


def assert_stats_equal(st, ref):
    for name, want in ref.items():
        got = getattr(st, name)
        if name == "excluded":
            assert got == want, name
        else:
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want, dtype=np.int64), err_msg=name)


def random_case(rng, n, k, dtype, integer=False):
    if integer:
        gt = rng.integers(0, 12, (n, k, 2)).astype(dtype)
        pred = gt + rng.integers(-6, 7, (n, k, 2)).astype(dtype)
    else:
        gt = rng.uniform(0, 300, (n, k, 2)).astype(dtype)
        pred = (gt + rng.normal(0, 15, (n, k, 2))).astype(dtype)
    gt[rng.random((n, k)) < 0.1] = np.nan
    gt[rng.random((n, k)) < 0.03, 0] = np.nan  # one coordinate missing also means "not annotated"
    pred[rng.random((n, k)) < 0.05] = np.nan
    pred[rng.random((n, k)) < 0.02, 1] = np.nan
    norm = rng.uniform(5, 60, n) if not integer else rng.integers(0, 12, n).astype(np.float64)
    norm[rng.random(n) < 0.1] = np.nan
    norm[rng.random(n) < 0.05] = 0.0
    visible = rng.random((n, k)) < 0.8 if rng.random() < 0.5 else None
    return np.ascontiguousarray(pred), np.ascontiguousarray(gt), visible, norm


# ---- hand-computed cases ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_pck_hand_computed_boundary_nan_and_exclusion(backend):
    # person 0: norm 10. joint 0 exact; joint 1 error 5 = 0.5 * 10 (inclusive: correct); joint 2 error
    # 5 + 1e-9 (wrong); joint 3 pred NaN (a miss: wrong); joint 4 gt NaN (excluded).
    # person 1: norm 0 -> excluded from PCK entirely, whatever its errors.
    gt = np.zeros((2, 5, 2))
    pred = np.zeros((2, 5, 2))
    pred[0, 1] = (3.0, 4.0)               # |(3, 4)| = 5
    pred[0, 2] = (0.0, 5.0 + 1e-9)
    pred[0, 3] = (np.nan, np.nan)
    gt[0, 4] = (np.nan, np.nan)
    norm = np.array([10.0, 0.0])
    st = BACKENDS[backend].fused_stats(pred, gt, None, norm, 0.5, CURVE, None, 0.5)
    np.testing.assert_array_equal(st.pck_correct, [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(st.pck_total, [1, 1, 1, 1, 0])
    assert st.excluded == 1
    # curve: joint 0 (error 0) counts at every threshold including 0; joint 1 (0.5) only at 0.5;
    # joint 2 (0.5000000001) and the miss never
    np.testing.assert_array_equal(st.curve_correct[0], np.ones(51))
    np.testing.assert_array_equal(st.curve_correct[1], [0] * 50 + [1])
    np.testing.assert_array_equal(st.curve_correct[2], np.zeros(51))
    np.testing.assert_array_equal(st.curve_correct[3], np.zeros(51))


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_curve_threshold_point_one_is_exact(backend):
    # errors 0.1 and 0.105 of the normaliser (1 px and 1.05 px, norm 10): the value at 0.1 counts only
    # the first, the value at 0.11 both
    gt = np.zeros((1, 2, 2))
    pred = np.array([[[1.0, 0.0], [1.05, 0.0]]])
    st = BACKENDS[backend].fused_stats(pred, gt, None, np.array([10.0]), 0.1, CURVE, None, 0.5)
    assert CURVE[10] == 0.1 and CURVE[11] == 0.11
    assert st.curve_correct[:, 10].sum() == 1
    assert st.curve_correct[:, 11].sum() == 2
    np.testing.assert_array_equal(st.pck_correct, [1, 0])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_pcp_hand_computed_strict_relaxed_midpoint_and_zero_length(backend):
    sticks = _two_stick_layout()
    gt = np.array([[[0, 0], [0, 20], [0, 40], [0, 40]],      # stick 0 length 20; stick 1 (0,10)-(0,40)
                   [[0, 0], [0, 20], [0, 40], [0, 40]],
                   [[5, 5], [5, 5], [9, 9], [9, 9]],        # stick 0 has zero length
                   [[5, 5], [5, 5], [9, 9], [9, 9]],
                   [[0, 0], [np.nan, np.nan], [0, 40], [0, 40]]], dtype=np.float64)
    pred = gt.copy()
    # person 0: joint 0 off by 10 (= 0.5 * 20, boundary: correct), joint 1 off by 6 -> stick 0 strict and
    # relaxed correct. Stick 1: endpoint a = mid(0, 1) moves by (10 + 6) / 2 = 8 in x, limit 0.5 * 30 = 15.
    pred[0, 0] = (10, 0)
    pred[0, 1] = (6, 20)
    # person 1: joint 0 off by 16 (> 10), joint 1 exact: strict wrong, relaxed (16 + 0) / 2 = 8 <= 10 right.
    # stick 1: a moves by 8 (<= 15), b = mid(2, 3) moves by (20 - 20) / 2 = 0 although both joints moved
    pred[1, 0] = (16, 0)
    pred[1, 2] = (20, 40)
    pred[1, 3] = (-20, 40)
    # person 2: zero-length stick 0 with exact prediction: correct; person 3: 1e-9 off: wrong
    pred[3, 0] = (5 + 1e-9, 5)
    # person 4: joint 1 unannotated -> both sticks excluded; its NaN pred elsewhere does not matter
    pred[4, 0] = (np.nan, 0)
    st = BACKENDS[backend].fused_stats(pred, gt, None, None, 0.5, CURVE, sticks, 0.5)
    np.testing.assert_array_equal(st.pcp_total, [4, 4])
    np.testing.assert_array_equal(st.pcp_strict, [1 + 0 + 1 + 0, 1 + 1 + 1 + 1])
    np.testing.assert_array_equal(st.pcp_relaxed, [1 + 1 + 1 + 0, 1 + 1 + 1 + 1])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_pcp_missing_prediction_is_wrong(backend):
    sticks = _two_stick_layout()[:1]
    gt = np.array([[[0, 0], [0, 20], [0, 0], [0, 0]]], dtype=np.float64)
    pred = gt.copy()
    pred[0, 1, 1] = np.nan
    st = BACKENDS[backend].fused_stats(pred, gt, None, None, 0.5, CURVE, sticks, 0.5)
    np.testing.assert_array_equal(st.pcp_total, [1])
    np.testing.assert_array_equal(st.pcp_strict, [0])
    np.testing.assert_array_equal(st.pcp_relaxed, [0])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_visible_mask_excludes_joints_and_sticks(backend):
    sticks = _two_stick_layout()[:1]
    gt = np.array([[[0, 0], [0, 20], [0, 40], [0, 60]]], dtype=np.float64)
    pred = gt + 100.0
    vis = np.array([[True, False, True, True]])
    st = BACKENDS[backend].fused_stats(pred, gt, vis, np.array([10.0]), 0.5, CURVE, sticks, 0.5)
    np.testing.assert_array_equal(st.pck_total, [1, 0, 1, 1])
    np.testing.assert_array_equal(st.pcp_total, [0])


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_joint_errors_and_normalisers(backend):
    impl = BACKENDS[backend]
    gt = np.array([[[0, 0], [3, 4], [np.nan, 1]], [[1, 1], [1, 1], [1, 1]]], dtype=np.float32)
    pred = np.array([[[0, 0], [0, 0], [0, 0]], [[np.nan, 1], [4, 5], [1, 1]]], dtype=np.float32)
    px = impl.joint_errors(pred, gt, None, None)
    np.testing.assert_array_equal(px, [[0, 5, np.nan], [np.inf, 5, 0]])
    scaled = impl.joint_errors(pred, gt, None, np.array([2.0, 0.0]))
    np.testing.assert_array_equal(scaled, [[0, 2.5, np.nan], [np.nan, np.nan, np.nan]])
    masked = impl.joint_errors(pred, gt, np.array([[True, False, True], [True, True, True]]), None)
    assert np.isnan(masked[0, 1])
    np.testing.assert_array_equal(impl.joint_distance(gt, 0, 1, 2.0), [10.0, 0.0])
    assert np.isnan(impl.joint_distance(gt, 0, 2, 1.0)[0])
    box = np.array([[10, 20, 40, 60], [np.nan] * 4], dtype=np.float64)  # 30 x 40 -> diagonal 50
    out = impl.head_box_size(box, 0.6)
    assert out[0] == pytest.approx(30.0) and np.isnan(out[1])


# ---- agreement with the loop reference, and between backends ----------------------------------------

@pytest.mark.parametrize("n,k,dtype,seed", [
    (1, 14, np.float64, 0), (2, 16, np.float32, 1), (3, 14, np.float32, 2), (7, 5, np.float64, 3),
    (40, 16, np.float64, 4), (129, 14, np.float32, 5), (300, 16, np.float64, 6)])
def test_random_agreement_with_loop_reference(n, k, dtype, seed):
    rng = np.random.default_rng(seed)
    pred, gt, visible, norm = random_case(rng, n, k, dtype)
    sticks = protocols.stick_array(skeleton.get("lsp" if k == 14 else "mpii")) if k in (14, 16) \
        else np.array([[0, 0, 1, 1], [0, 1, 2, 4], [3, 3, 3, 3]], dtype=np.int64)
    thr, alpha = float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.2, 0.8))
    ref = loop_counts(pred, gt, visible, norm, thr, CURVE, sticks.tolist(), alpha)
    for impl in BACKENDS.values():
        assert_stats_equal(impl.fused_stats(pred, gt, visible, norm, thr, CURVE, sticks, alpha), ref)


@pytest.mark.parametrize("curve", [np.array([0.5]), np.array([0.0, 0.05, 0.3, 0.31, 0.5, 2.0]),
                                   np.array([0.2, 0.21])])
def test_any_increasing_curve_grid(curve):
    # one threshold (the grid step is undefined), an irregular grid, a grid not starting at 0; with misses
    rng = np.random.default_rng(9)
    pred, gt, visible, norm = random_case(rng, 200, 14, np.float64)
    ref = loop_counts(pred, gt, visible, norm, 0.5, curve.tolist(), [], 0.5)
    for impl in BACKENDS.values():
        st = impl.fused_stats(pred, gt, visible, norm, 0.5, curve, None, 0.5)
        np.testing.assert_array_equal(st.curve_correct, ref["curve_correct"])


@pytest.mark.parametrize("seed", range(4))
def test_backends_bit_identical_on_ties(seed):
    # integer coordinates and normalisers put many errors exactly on thresholds
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 3000))
    pred, gt, visible, norm = random_case(rng, n, 16, np.float64, integer=True)
    sticks = protocols.stick_array(skeleton.MPII)
    a = BACKENDS["numba-parallel" if seed % 2 else "numba"].fused_stats(pred, gt, visible, norm, 0.5, CURVE,
                                                                        sticks, 0.5)
    b = numpy_ref.fused_stats(pred, gt, visible, norm, 0.5, CURVE, sticks, 0.5)
    for name in ("pck_correct", "pck_total", "curve_correct", "pcp_strict", "pcp_relaxed", "pcp_total"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.excluded == b.excluded
    np.testing.assert_array_equal(kernels.joint_errors(pred, gt, visible, norm),
                                  numpy_ref.joint_errors(pred, gt, visible, norm))


def test_small_n_and_many_threads_do_not_race():
    # the parallel path on 1 to 20 people: num_chunks caps at n, and every chunk's counts are summed
    rng = np.random.default_rng(7)
    sticks = protocols.stick_array(skeleton.LSP)
    for n in range(1, 21):
        assert 1 <= kernels.num_chunks(n) <= n
        pred, gt, visible, norm = random_case(rng, n, 14, np.float64)
        ref = numpy_ref.fused_stats(pred, gt, visible, norm, 0.5, CURVE, sticks, 0.5)
        got = BACKENDS["numba-parallel"].fused_stats(pred, gt, visible, norm, 0.5, CURVE, sticks, 0.5)
        for name in ("pck_correct", "pck_total", "curve_correct", "pcp_strict", "pcp_total"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


def test_fresh_process_loads_kernels_from_cache():
    # compile (or load) both kernels here, which writes the on-disk cache (in __pycache__ beside
    # kernels.py, or wherever NUMBA_CACHE_DIR points); a fresh process must then load them, not compile
    code = (
        "import numpy as np\n"
        "from deeppose_fast.metrics import kernels, protocols\n"
        "from deeppose_fast import skeleton\n"
        "g = np.zeros((3, 14, 2)); p = g + 1.0\n"
        "for minimum in (10**9, 0):  # the single-threaded kernel, then the parallel one\n"
        "    kernels.PARALLEL_MIN_PEOPLE = minimum\n"
        "    kernels.fused_stats(p, g, None, np.ones(3), 0.5, protocols.CURVE_THRESHOLDS,\n"
        "                        protocols.stick_array(skeleton.LSP), 0.5)\n"
        "s = [kernels._fused_serial.stats, kernels._fused_parallel.stats]\n"
        "print(sum(sum(x.cache_hits.values()) for x in s), sum(sum(x.cache_misses.values()) for x in s))\n")
    g = np.zeros((3, 14, 2))
    for impl in (BACKENDS["numba"], BACKENDS["numba-parallel"]):
        impl.fused_stats(g + 1.0, g, None, np.ones(3), 0.5, CURVE, protocols.stick_array(skeleton.LSP), 0.5)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    hits, misses = map(int, run.stdout.split())
    assert (hits, misses) == (2, 0)
