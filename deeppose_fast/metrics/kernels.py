"""Numba kernels: one fused pass over the people computes every count a protocol needs.

Legend: N people, K joints, S sticks, T curve thresholds, C chunks (parallel work items).

Conventions (shared with ``numpy_ref.py``, which must return bit-identical counts):
  - a joint is *evaluated* when both gt coordinates are finite and, if a ``visible`` mask is given, it is
    True there; other joints are excluded from every denominator;
  - the error of an evaluated joint is ``sqrt(dx * dx + dy * dy)`` in float64; a NaN in pred makes it
    ``inf`` (a miss, wrong at every threshold);
  - PCK: ``error / norm <= t`` (inclusive); a person whose ``norm`` is NaN, infinite or <= 0 is excluded
    from PCK for all joints and counted in ``excluded``;
  - PCP: a stick counts when all its endpoint joints are evaluated; endpoint = mean of two joint indices
    (the same index twice for a single joint); strict: both endpoint errors ``<= alpha * length``;
    relaxed: their mean ``<= alpha * length``. A zero-length stick is therefore correct only when both
    endpoint errors are exactly 0.

No ``fastmath``: it would let LLVM drop NaN checks (``nnan``) and replace ``x / y`` by ``x * (1 / y)``
(``arcp``), which moves results on the inclusive threshold boundary. The speed comes from the single
fused pass (no (N, K) temporaries) and from ``prange`` over chunks of people, each chunk with its own
counters so that threads never write to shared memory. Below ``PARALLEL_MIN_PEOPLE`` a single-threaded
twin of the same loop runs instead: waking the thread pool costs more than a small input takes.

Compiled functions are cached on disk (``cache=True``, in ``__pycache__`` beside this file, or under
``NUMBA_CACHE_DIR`` when the user sets it; this module never sets it) so that a new process loads them
instead of compiling. Inputs may be float32 or float64 (one compiled version each).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from deeppose_fast.metrics.protocols import Stats

#: an empty (0, 0) mask means "no visibility mask"; an empty norm means "no PCK"
_NO_MASK = np.zeros((0, 0), dtype=np.bool_)
_NO_NORM = np.zeros(0, dtype=np.float64)
_NO_STICKS = np.zeros((0, 4), dtype=np.int64)


#: below this many people the single-threaded kernel runs (no thread-pool wake-up)
PARALLEL_MIN_PEOPLE = 20_000


def num_chunks(n: int) -> int:
    """Work items for ``prange``: a few per thread (load balance on a shared machine), at most n."""
    return max(1, min(n, 4 * numba.get_num_threads()))


@njit(cache=True)
def _grid_bin(curve, t0, inv_step, x):
    """Index of the first ``curve`` element >= x (``np.searchsorted(curve, x, 'left')``), len if none.

    Guesses the index from a uniform grid (``t0``, ``1 / step``) and walks to the exact answer, so it is
    exact for any increasing ``curve`` and O(1) for the usual 0:0.01:0.5; a binary search here cost more
    than the rest of the kernel (its branches are unpredictable)."""
    t = curve.shape[0]
    g = (x - t0) * inv_step
    if not g > 0.0:  # also NaN (inf * 0 with a one-threshold grid): start at 0, the walk finds the end
        b = 0
    elif g >= t:
        b = t
    else:
        b = int(math.ceil(g))
    while b > 0 and curve[b - 1] >= x:
        b -= 1
    while b < t and curve[b] < x:
        b += 1
    return b


@njit(cache=True)
def _accumulate(pred, gt, visible, norm, threshold, curve, inv_step, sticks, alpha, lo, hi, c,
                pck_ok, pck_n, hist, excluded, strict, relaxed, stick_n):
    """Add the counts of people [lo, hi) to row c of the accumulators (see ``_fused_parallel``)."""
    k = gt.shape[1]
    s = sticks.shape[0]
    use_mask = visible.shape[0] != 0
    do_pck = norm.shape[0] != 0
    t0 = curve[0]
    dist = np.empty(k, np.float64)
    ev = np.empty(k, np.bool_)
    for i in range(lo, hi):
        for j in range(k):
            gx = np.float64(gt[i, j, 0])
            gy = np.float64(gt[i, j, 1])
            ok = not (math.isnan(gx) or math.isnan(gy))
            if use_mask:
                ok = ok and visible[i, j]
            ev[j] = ok
            if ok:
                dx = np.float64(pred[i, j, 0]) - gx
                dy = np.float64(pred[i, j, 1]) - gy
                d = math.sqrt(dx * dx + dy * dy)
                dist[j] = math.inf if math.isnan(d) else d
        if do_pck:
            nv = norm[i]
            if nv > 0.0 and nv < math.inf:
                for j in range(k):
                    if ev[j]:
                        e = dist[j] / nv
                        pck_n[c, j] += 1
                        pck_ok[c, j] += e <= threshold
                        hist[c, j, _grid_bin(curve, t0, inv_step, e)] += 1
            else:
                excluded[c] += 1
        for q in range(s):
            a0 = sticks[q, 0]
            a1 = sticks[q, 1]
            b0 = sticks[q, 2]
            b1 = sticks[q, 3]
            if not (ev[a0] and ev[a1] and ev[b0] and ev[b1]):
                continue
            gax, gay, ea = _endpoint(pred, gt, dist, i, a0, a1)
            gbx, gby, eb = _endpoint(pred, gt, dist, i, b0, b1)
            lx = gax - gbx
            ly = gay - gby
            limit = alpha * math.sqrt(lx * lx + ly * ly)
            stick_n[c, q] += 1
            strict[c, q] += (ea <= limit) & (eb <= limit)
            relaxed[c, q] += 0.5 * (ea + eb) <= limit


@njit(cache=True, inline="always")
def _endpoint(pred, gt, dist, i, j0, j1):
    """A stick endpoint, the mean of joints j0 and j1 of person i: (gt x, gt y, error). A single-joint
    endpoint (j0 == j1) reuses the joint's error in ``dist``: 0.5 * (x + x) == x exactly."""
    if j0 == j1:
        return np.float64(gt[i, j0, 0]), np.float64(gt[i, j0, 1]), dist[j0]
    gx = 0.5 * (np.float64(gt[i, j0, 0]) + np.float64(gt[i, j1, 0]))
    gy = 0.5 * (np.float64(gt[i, j0, 1]) + np.float64(gt[i, j1, 1]))
    dx = 0.5 * (np.float64(pred[i, j0, 0]) + np.float64(pred[i, j1, 0])) - gx
    dy = 0.5 * (np.float64(pred[i, j0, 1]) + np.float64(pred[i, j1, 1])) - gy
    e = math.sqrt(dx * dx + dy * dy)
    return gx, gy, (math.inf if math.isnan(e) else e)


@njit(cache=True)
def _alloc(n_chunks, k, t, s):
    return (np.zeros((n_chunks, k), np.int64), np.zeros((n_chunks, k), np.int64),
            np.zeros((n_chunks, k, t + 1), np.int64), np.zeros(n_chunks, np.int64),
            np.zeros((n_chunks, s), np.int64), np.zeros((n_chunks, s), np.int64),
            np.zeros((n_chunks, s), np.int64))


@njit(cache=True, parallel=True)
def _fused_parallel(pred, gt, visible, norm, threshold, curve, inv_step, sticks, alpha, n_chunks):
    """Per-chunk counts. pred, gt (N, K, 2); visible (N, K) or (0, 0); norm (N,) or (0,) for no PCK;
    curve (T,) increasing; sticks (S, 4). Returns pck_ok (C, K), pck_n (C, K), hist (C, K, T + 1),
    excluded (C,), strict, relaxed, stick_n (C, S); hist[.., b] counts errors in (curve[b-1], curve[b]]."""
    n = gt.shape[0]
    acc = _alloc(n_chunks, gt.shape[1], curve.shape[0], sticks.shape[0])
    pck_ok, pck_n, hist, excluded, strict, relaxed, stick_n = acc
    for c in prange(n_chunks):
        _accumulate(pred, gt, visible, norm, threshold, curve, inv_step, sticks, alpha,
                    c * n // n_chunks, (c + 1) * n // n_chunks, c,
                    pck_ok, pck_n, hist, excluded, strict, relaxed, stick_n)
    return acc


@njit(cache=True)
def _fused_serial(pred, gt, visible, norm, threshold, curve, inv_step, sticks, alpha):
    """``_fused_parallel`` with one chunk and no thread pool: waking the pool costs more than small
    inputs take (tens of ms on a busy 2-core machine with the OpenMP layer)."""
    acc = _alloc(1, gt.shape[1], curve.shape[0], sticks.shape[0])
    pck_ok, pck_n, hist, excluded, strict, relaxed, stick_n = acc
    _accumulate(pred, gt, visible, norm, threshold, curve, inv_step, sticks, alpha, 0, gt.shape[0], 0,
                pck_ok, pck_n, hist, excluded, strict, relaxed, stick_n)
    return acc


@njit(cache=True, parallel=True)
def _errors_kernel(pred, gt, visible, norm, out):
    """out (N, K): error / norm[i] (norm empty: pixels); NaN = not evaluated or unusable norm."""
    n = gt.shape[0]
    k = gt.shape[1]
    use_mask = visible.shape[0] != 0
    do_norm = norm.shape[0] != 0
    for i in prange(n):
        nv = 1.0
        if do_norm:
            nv = norm[i]
        usable = nv > 0.0 and nv < math.inf
        for j in range(k):
            gx = np.float64(gt[i, j, 0])
            gy = np.float64(gt[i, j, 1])
            ok = usable and not (math.isnan(gx) or math.isnan(gy))
            if use_mask:
                ok = ok and visible[i, j]
            if not ok:
                out[i, j] = math.nan
                continue
            dx = np.float64(pred[i, j, 0]) - gx
            dy = np.float64(pred[i, j, 1]) - gy
            d = math.sqrt(dx * dx + dy * dy)
            out[i, j] = math.inf if math.isnan(d) else d / nv


@njit(cache=True)
def _joint_distance_kernel(gt, a, b, scale, out):
    for i in range(gt.shape[0]):
        dx = np.float64(gt[i, a, 0]) - np.float64(gt[i, b, 0])
        dy = np.float64(gt[i, a, 1]) - np.float64(gt[i, b, 1])
        out[i] = scale * math.sqrt(dx * dx + dy * dy)


@njit(cache=True)
def _head_box_kernel(box, scale, out):
    for i in range(box.shape[0]):
        w = box[i, 2] - box[i, 0]
        h = box[i, 3] - box[i, 1]
        out[i] = scale * math.sqrt(w * w + h * h)


# ---- Python wrappers: argument plumbing and the (cheap) reduction over chunks -----------------------

def joint_distance(gt: np.ndarray, a: int, b: int, scale: float = 1.0) -> np.ndarray:
    """(N,) float64 ``scale * |gt[:, a] - gt[:, b]|``; NaN where either joint is unannotated.

    Args:
        gt: (N, K, 2) float32/float64 ground truth.
        a, b: joint indices. scale: factor.
    """
    out = np.empty(gt.shape[0], np.float64)
    _joint_distance_kernel(gt, int(a), int(b), float(scale), out)
    return out


def head_box_size(head_box: np.ndarray, scale: float) -> np.ndarray:
    """(N,) float64 ``scale * diagonal``; NaN where the box is NaN.

    Args:
        head_box: (N, 4) float64 ``x1, y1, x2, y2``. scale: factor (0.6 for official MPII).
    """
    out = np.empty(head_box.shape[0], np.float64)
    _head_box_kernel(head_box, float(scale), out)
    return out


def joint_errors(pred, gt, visible=None, norm=None) -> np.ndarray:
    """(N, K) float64 joint errors, divided by ``norm`` when given; NaN = not evaluated, inf = missed.

    Args:
        pred, gt: (N, K, 2) float32/float64, same dtype, C-contiguous.
        visible: (N, K) bool or None. norm: (N,) float64 or None (errors in pixels).
    """
    out = np.empty(gt.shape[:2], np.float64)
    _errors_kernel(pred, gt, _NO_MASK if visible is None else visible,
                   _NO_NORM if norm is None else norm, out)
    return out


def fused_stats(pred, gt, visible, norm, threshold, curve, sticks, alpha) -> Stats:
    """Every count of one evaluation in one parallel pass.

    Args:
        pred, gt: (N, K, 2) float32/float64, same dtype, C-contiguous.
        visible: (N, K) bool or None.
        norm: (N,) float64 PCK normaliser, or None to skip PCK.
        threshold: PCK threshold (inclusive). curve: (T,) float64 increasing thresholds.
        sticks: (S, 4) int64 from ``protocols.stick_array``, or None to skip PCP. alpha: PCP threshold.
    """
    n = gt.shape[0]
    inv_step = (curve.shape[0] - 1) / (curve[-1] - curve[0]) if curve.shape[0] > 1 else 0.0
    args = (pred, gt, _NO_MASK if visible is None else visible, _NO_NORM if norm is None else norm,
            float(threshold), curve, float(inv_step), _NO_STICKS if sticks is None else sticks, float(alpha))
    if n < PARALLEL_MIN_PEOPLE or numba.get_num_threads() == 1:
        acc = _fused_serial(*args)
    else:
        acc = _fused_parallel(*args, num_chunks(n))
    ok, tot, hist, excl, strict, relaxed, stick_n = acc
    # hist[..., b] counts errors in (curve[b-1], curve[b]]: the cumulative sum is "<= curve[b]"
    curve_correct = np.cumsum(hist.sum(axis=0), axis=1)[:, :-1]
    return Stats(pck_correct=ok.sum(axis=0), pck_total=tot.sum(axis=0),
                 curve_correct=np.ascontiguousarray(curve_correct), excluded=int(excl.sum()),
                 pcp_strict=strict.sum(axis=0), pcp_relaxed=relaxed.sum(axis=0),
                 pcp_total=stick_n.sum(axis=0))
