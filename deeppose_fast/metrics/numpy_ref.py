"""Vectorised NumPy implementation of the kernels: the benchmark's baseline and ``backend="numpy"``.

Legend: N people, K joints, S sticks, T curve thresholds.

Same conventions and the same float64 arithmetic as ``kernels.py`` (see its docstring), written the way
one would write it in NumPy: whole-array operations over (N, K) and (N, S) temporaries. The counts it
returns are bit-identical to the Numba kernels'.
"""
from __future__ import annotations

import numpy as np

from deeppose_fast.metrics.protocols import Stats


def _evaluated(gt: np.ndarray, visible: np.ndarray | None) -> np.ndarray:
    """(N, K) bool: both gt coordinates annotated and, with a mask, visible."""
    ev = ~np.isnan(gt).any(axis=2)
    if visible is not None:
        ev &= visible
    return ev


def _distance(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(...,) float64 ``sqrt(dx * dx + dy * dy)`` of (..., 2) arrays, NaN -> inf (a missed prediction)."""
    d = p - g
    dist = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])
    dist[np.isnan(dist)] = np.inf
    return dist


def joint_distance(gt: np.ndarray, a: int, b: int, scale: float = 1.0) -> np.ndarray:
    """(N,) ``scale * |gt[:, a] - gt[:, b]|``; gt (N, K, 2); NaN where a joint is unannotated."""
    d = gt[:, a].astype(np.float64) - gt[:, b].astype(np.float64)
    return scale * np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])


def head_box_size(head_box: np.ndarray, scale: float) -> np.ndarray:
    """(N,) ``scale * diagonal`` of head_box (N, 4) ``x1, y1, x2, y2``."""
    w = head_box[:, 2] - head_box[:, 0]
    h = head_box[:, 3] - head_box[:, 1]
    return scale * np.sqrt(w * w + h * h)


def joint_errors(pred, gt, visible=None, norm=None) -> np.ndarray:
    """(N, K) errors (/ norm when given); NaN = not evaluated or unusable norm, inf = missed.
    pred, gt (N, K, 2); visible (N, K) bool or None; norm (N,) or None."""
    p = pred.astype(np.float64, copy=False)
    g = gt.astype(np.float64, copy=False)
    err = _distance(p, g)
    ev = _evaluated(g, visible)
    if norm is not None:
        usable = (norm > 0) & (norm < np.inf)
        with np.errstate(invalid="ignore", divide="ignore"):
            err = err / norm[:, None]
        ev &= usable[:, None]
    err[~ev] = np.nan
    return err


def fused_stats(pred, gt, visible, norm, threshold, curve, sticks, alpha) -> Stats:
    """The counts of ``kernels.fused_stats`` (same arguments), with NumPy array operations."""
    p = pred.astype(np.float64, copy=False)
    g = gt.astype(np.float64, copy=False)
    n, k = g.shape[:2]
    ev = _evaluated(g, visible)
    if norm is not None:
        dist = _distance(p, g)
        usable = (norm > 0) & (norm < np.inf)
        m = ev & usable[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            e = dist / norm[:, None]
        pck_correct = ((e <= threshold) & m).sum(axis=0)
        pck_total = m.sum(axis=0)
        # histogram of each error's first threshold >= it, per joint; its running sum is "<= curve[b]"
        t = curve.shape[0]
        bins = np.searchsorted(curve, e[m], side="left") + (t + 1) * np.nonzero(m)[1]
        hist = np.bincount(bins, minlength=k * (t + 1)).reshape(k, t + 1)
        curve_correct = np.cumsum(hist, axis=1)[:, :-1]
        excluded = int(n - usable.sum())
    else:
        pck_correct = pck_total = np.zeros(k, np.int64)
        curve_correct = np.zeros((k, curve.shape[0]), np.int64)
        excluded = 0
    if sticks is not None and sticks.shape[0]:
        a0, a1, b0, b1 = sticks.T
        ga = 0.5 * (g[:, a0] + g[:, a1])
        gb = 0.5 * (g[:, b0] + g[:, b1])
        ea = _distance(0.5 * (p[:, a0] + p[:, a1]), ga)
        eb = _distance(0.5 * (p[:, b0] + p[:, b1]), gb)
        l = ga - gb
        limit = alpha * np.sqrt(l[..., 0] * l[..., 0] + l[..., 1] * l[..., 1])
        valid = ev[:, a0] & ev[:, a1] & ev[:, b0] & ev[:, b1]
        pcp_strict = ((ea <= limit) & (eb <= limit) & valid).sum(axis=0)
        pcp_relaxed = ((0.5 * (ea + eb) <= limit) & valid).sum(axis=0)
        pcp_total = valid.sum(axis=0)
    else:
        pcp_strict = pcp_relaxed = pcp_total = np.zeros(0, np.int64)
    return Stats(pck_correct=np.asarray(pck_correct, np.int64), pck_total=np.asarray(pck_total, np.int64),
                 curve_correct=np.asarray(curve_correct, np.int64), excluded=excluded,
                 pcp_strict=np.asarray(pcp_strict, np.int64), pcp_relaxed=np.asarray(pcp_relaxed, np.int64),
                 pcp_total=np.asarray(pcp_total, np.int64))
