"""The metric functions: ``evaluate()`` (every table of a named protocol, one ``EvalResult``) and the single
metrics it is made of (``normaliser``, ``joint_errors``, ``pck``, ``pck_curve``, ``pcp``).

Legend: N people, K joints (LSP 14, MPII 16), S sticks (10), T curve thresholds.

Coordinates are pixels. NaN in ``gt`` = not annotated (left out of every denominator); NaN in ``pred`` =
no prediction (a miss: wrong for every annotated joint and every stick touching it).

Every function checks its inputs (``protocols.check_*``), makes one pass of a backend over the people
(``"numba"``: ``kernels.py``, the default; ``"numpy"``: ``numpy_ref.py``, the same counts) and turns the
counts into scores (``aggregate.py``).
"""
from __future__ import annotations

import numpy as np

from deeppose_fast.metrics import aggregate, kernels, numpy_ref, protocols
from deeppose_fast.metrics.protocols import CURVE_THRESHOLDS, Protocol
from deeppose_fast.metrics.result import EvalResult
from deeppose_fast.metrics.tables import Curve

BACKENDS = ("numba", "numpy")
_IMPLEMENTATIONS = {"numba": kernels, "numpy": numpy_ref}


def _backend(name: str):
    try:
        return _IMPLEMENTATIONS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}") from None


def _check_norm(norm, n: int) -> np.ndarray:
    arr = protocols.real_array(norm, "norm")
    if arr.shape != (n,):
        raise ValueError(f"norm must have shape (N,) = ({n},), one normaliser per person, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def normaliser(gt, dataset: str = "lsp", protocol: str = "dtf", head_box=None, *,
               backend: str = "numba") -> np.ndarray:
    """The protocol's per-person PCK normaliser in pixels.

    dtf: |head top - neck|; official MPII: 0.6 x head-box diagonal; official LSP: |L shoulder - R hip|.

    Args:
        gt: (N, K, 2) ground truth, NaN = not annotated.
        head_box: (N, 4) ``x1, y1, x2, y2`` (official MPII only).
    Returns:
        (N,) float64; NaN where the needed joints or box are missing (such people are excluded from PCK).
    """
    proto = protocols.get(dataset, protocol)
    _, gt = protocols.check_poses(gt, gt, proto.skeleton.num_joints, dataset)
    return _normaliser(proto, gt, head_box, _backend(backend))


def _normaliser(proto: Protocol, gt: np.ndarray, head_box, impl) -> np.ndarray:
    if proto.normaliser == "head_box":
        box = protocols.check_head_box(head_box, gt.shape[0])
        return impl.head_box_size(box, proto.norm_scale)
    a, b = proto.norm_joints
    return impl.joint_distance(gt, a, b, proto.norm_scale)


def joint_errors(pred, gt, norm=None, visible=None, *, backend: str = "numba") -> np.ndarray:
    """Per-joint errors, in pixels or divided by a per-person normaliser.

    Args:
        pred, gt: (N, K, 2) pixels (any K); NaN in gt = not annotated, NaN in pred = a miss.
        norm: (N,) normaliser (e.g. from :func:`normaliser`) or None for pixels.
        visible: (N, K) bool or None: False joints are treated as not annotated.
    Returns:
        (N, K) float64: NaN = not evaluated (unannotated, masked, or unusable normaliser), inf = missed.
    """
    pred, gt = protocols.check_poses(pred, gt, None)
    vis = protocols.check_visible(visible, gt.shape[:2])
    nrm = None if norm is None else _check_norm(norm, gt.shape[0])
    return _backend(backend).joint_errors(pred, gt, vis, nrm)


def pck(pred, gt, norm, threshold: float = 0.5, visible=None, *,
        backend: str = "numba") -> tuple[np.ndarray, np.ndarray]:
    """Per-joint PCK: the fraction of evaluated joints with ``error / norm <= threshold``.

    Args:
        pred, gt: (N, K, 2) pixels (any K). norm: (N,) per-person normaliser; people whose normaliser is
            NaN, infinite or <= 0 are left out. visible: (N, K) bool or None.
    Returns:
        scores (K,) in [0, 1] (NaN where no joint was evaluated), counts (K,) evaluated joints.
    """
    pred, gt = protocols.check_poses(pred, gt, None)
    vis = protocols.check_visible(visible, gt.shape[:2])
    nrm = _check_norm(norm, gt.shape[0])
    thr = protocols.check_threshold(threshold)
    st = _backend(backend).fused_stats(pred, gt, vis, nrm, thr, CURVE_THRESHOLDS, None, 0.0)
    return aggregate.ratio(st.pck_correct, st.pck_total), st.pck_total


def pck_curve(pred, gt, norm, thresholds=CURVE_THRESHOLDS, visible=None, *,
              backend: str = "numba") -> Curve:
    """PCK pooled over all joints and people at each threshold, and the normalised area under it.

    Args:
        pred, gt: (N, K, 2). norm: (N,). thresholds: (T,) increasing, >= 0 (default 0:0.01:0.5).
        visible: (N, K) bool or None.
    Returns:
        a :class:`Curve` (values (T,) in [0, 1], ``auc`` = trapezoid area / threshold range).
    """
    pred, gt = protocols.check_poses(pred, gt, None)
    vis = protocols.check_visible(visible, gt.shape[:2])
    nrm = _check_norm(norm, gt.shape[0])
    thr = protocols.check_thresholds(thresholds)
    st = _backend(backend).fused_stats(pred, gt, vis, nrm, thr[-1], thr, None, 0.0)
    if st.pck_total.sum() == 0:
        raise ValueError("no joint could be evaluated (no annotated joint of a person with a usable norm)")
    values = st.curve_correct.sum(axis=0) / st.pck_total.sum()
    return aggregate.make_curve("PCK", "pooled", thr, values)


def pcp(pred, gt, dataset: str = "lsp", threshold: float = 0.5, visible=None, *, relaxed: bool = False,
        backend: str = "numba") -> tuple[np.ndarray, np.ndarray]:
    """Per-stick PCP, in the order of ``skeleton.get(dataset).sticks``.

    Strict: both endpoint errors ``<= threshold x`` ground-truth stick length; relaxed: their mean.

    Args:
        pred, gt: (N, K, 2) pixels with K the dataset's joint count. visible: (N, K) bool or None.
    Returns:
        scores (S,) in [0, 1] (NaN where no stick was evaluated), counts (S,) evaluated sticks.
    """
    proto = protocols.get(dataset, "dtf")
    pred, gt = protocols.check_poses(pred, gt, proto.skeleton.num_joints, dataset)
    vis = protocols.check_visible(visible, gt.shape[:2])
    alpha = protocols.check_threshold(threshold)
    st = _backend(backend).fused_stats(pred, gt, vis, None, 0.0, CURVE_THRESHOLDS,
                                       protocols.stick_array(proto.skeleton), alpha)
    correct = st.pcp_relaxed if relaxed else st.pcp_strict
    return aggregate.ratio(correct, st.pcp_total), st.pcp_total


def evaluate(pred, gt, dataset: str = "lsp", protocol: str = "dtf", head_box=None, visible=None,
             threshold: float = 0.5, *, pck_threshold: float | None = None,
             curve_thresholds=CURVE_THRESHOLDS, backend: str = "numba") -> EvalResult:
    """Evaluate predictions under a named protocol and return every table it reports.

    Args:
        pred: (N, K, 2) predicted joints in pixels (K = 14 for LSP, 16 for MPII, the data set's own joint
            order); NaN = no prediction, counted wrong for every annotated joint.
        gt: (N, K, 2) ground truth in pixels; NaN = not annotated, excluded from every denominator (and a
            stick with an unannotated endpoint joint is excluded).
        dataset: ``"lsp"`` or ``"mpii"`` (the joint layout).
        protocol: ``"dtf"`` or ``"official"`` (see ``deeppose_fast.metrics.protocols``).
        head_box: (N, 4) ``x1, y1, x2, y2`` pixels; required by official MPII (PCKh normaliser
            0.6 x diagonal); a NaN row excludes that person from PCKh. Ignored by the other protocols.
        visible: (N, K) bool or None. None (the default, and what the official MPII protocol does) counts
            every annotated joint, visible or not. A mask restricts the evaluation to joints that are
            True there: False joints are treated as not annotated (normalisers still use them).
        threshold: PCP threshold (fraction of the stick length) and PCKh threshold (fraction of the
            normaliser); inclusive.
        pck_threshold: override the PCK table's threshold (default: ``threshold``; official LSP: 0.2).
        curve_thresholds: (T,) increasing thresholds of the PCK curve (default 0:0.01:0.5).
        backend: ``"numba"`` (default) or ``"numpy"``; identical counts.

    Edge cases: a person whose normaliser is unannotated, NaN or 0 is left out of PCK for all joints and
    counted in ``excluded``; a zero-length stick is correct only if both endpoint errors are exactly 0.

    Raises:
        ValueError / TypeError on a wrong shape, dtype or joint count, an unknown dataset, protocol or
        backend, a missing or all-NaN head box under official MPII, all-NaN ground truth, or when no
        person has a usable normaliser or no stick can be evaluated.
    """
    proto = protocols.get(dataset, protocol)
    impl = _backend(backend)
    sk = proto.skeleton
    pred, gt = protocols.check_poses(pred, gt, sk.num_joints, dataset)
    vis = protocols.check_visible(visible, gt.shape[:2])
    alpha = protocols.check_threshold(threshold)
    if pck_threshold is not None:
        pck_thr = protocols.check_threshold(pck_threshold, "pck_threshold")
    else:
        pck_thr = proto.pck_threshold if proto.pck_threshold is not None else alpha
    curve_thr = protocols.check_thresholds(curve_thresholds)

    norm = _normaliser(proto, gt, head_box, impl)
    sticks = protocols.stick_array(sk) if proto.pcp_total else None
    st = impl.fused_stats(pred, gt, vis, norm, pck_thr, curve_thr, sticks, alpha)

    if st.pck_total.sum() == 0:
        what = ("head box" if proto.normaliser == "head_box"
                else " - ".join(sk.joint_names[j] for j in proto.norm_joints) + " distance")
        raise ValueError(f"no person has a usable {proto.pck_name} normaliser ({what} annotated and > 0) "
                         f"with an annotated joint: {st.excluded} of {gt.shape[0]} people excluded")
    if sticks is not None and st.pcp_total.sum() == 0:
        raise ValueError("no PCP stick can be evaluated: no person has both endpoints of any stick annotated")

    tables = []
    if proto.pcp_total:
        tables += aggregate.pcp_tables(proto, st, alpha)
    tables += aggregate.pck_tables(proto, st, pck_thr)
    primary = tables[0] if proto.primary == "pcp" else tables[-1]
    return EvalResult(dataset=dataset, protocol=protocol, description=proto.description,
                      threshold=alpha, pck_threshold=pck_thr, metric=primary.title,
                      parts=dict(primary.scores), total=primary.total, counts=dict(primary.counts),
                      tables={t.name: t for t in tables},
                      curve=aggregate.protocol_curve(proto, st, curve_thr),
                      num_people=int(gt.shape[0]), excluded=st.excluded, backend=backend)
