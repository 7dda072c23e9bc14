"""Pose metrics: PCP (strict, relaxed), PCKh / PCK at a threshold and as a curve, per-part and symmetric
tables, under two named protocols (``dtf``: the published DeepPose tables; ``official``: MPII's and the
common LSP evaluation). See ``protocols.py`` for exactly what each protocol computes.

Legend: N people, K joints (LSP 14, MPII 16), S sticks (10), T curve thresholds.

Coordinates are pixels. NaN in ``gt`` = not annotated (left out of every denominator); NaN in ``pred`` =
no prediction (a miss: wrong for every annotated joint and every stick touching it).

    >>> res = evaluate(pred, gt, dataset="lsp", protocol="dtf")
    >>> print(res.table())
    >>> res.parts["Torso"], res.total, res.to_dict()

Two backends compute the same counts: ``"numba"`` (``kernels.py``, default) and ``"numpy"``
(``numpy_ref.py``, the vectorised baseline of ``benchmarks/bench_metrics.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from deeppose_fast.metrics import protocols
from deeppose_fast.metrics.protocols import CURVE_THRESHOLDS, DATASETS, PROTOCOLS, Protocol, Stats
from deeppose_fast.metrics.tables import Curve, Table, format_result

__all__ = ["evaluate", "EvalResult", "Table", "Curve", "Protocol", "Stats", "normaliser", "joint_errors",
           "pck", "pck_curve", "pcp", "CURVE_THRESHOLDS", "DATASETS", "PROTOCOLS", "BACKENDS"]

BACKENDS = ("numba", "numpy")


def _backend(name: str):
    if name == "numba":
        from deeppose_fast.metrics import kernels
        return kernels
    if name == "numpy":
        from deeppose_fast.metrics import numpy_ref
        return numpy_ref
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


def _ratio(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """correct / total as float64, NaN where total is 0."""
    correct, total = np.broadcast_arrays(correct, total)
    out = np.full(correct.shape, np.nan)
    np.divide(correct, total, out=out, where=total > 0)
    return out


def _mean_defined(values) -> float:
    """Unweighted mean of the non-NaN values; NaN if there are none."""
    if isinstance(values, np.ndarray):
        values = values.tolist()  # Python floats: far cheaper to loop over than NumPy scalars
    vals = [v for v in values if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else math.nan


def _check_norm(norm, n: int) -> np.ndarray:
    arr = protocols.real_array(norm, "norm")
    if arr.shape != (n,):
        raise ValueError(f"norm must have shape (N,) = ({n},), one normaliser per person, got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


# ---- single metrics ---------------------------------------------------------------------------------

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
    return _ratio(st.pck_correct, st.pck_total), st.pck_total


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
    return _make_curve("PCK", "pooled", thr, values)


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
    return _ratio(correct, st.pcp_total), st.pcp_total


def _make_curve(name: str, rule: str, thresholds: np.ndarray, values: np.ndarray) -> Curve:
    if thresholds.size > 1:
        auc = float(np.trapezoid(values, thresholds) / (thresholds[-1] - thresholds[0]))
    else:
        auc = float(values[0])
    return Curve(name=name, rule=rule, thresholds=[float(t) for t in thresholds],
                 values=[float(v) for v in values], auc=auc)


# ---- evaluate -----------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    """The result of :func:`evaluate`. Scores are fractions in [0, 1].

    Attributes:
        dataset, protocol: as passed; description: what the protocol computes (one line).
        threshold: the PCP / PCKh threshold; pck_threshold: the PCK table's threshold (official LSP: 0.2).
        metric: title of the primary table (``"PCP@0.5"`` for LSP, ``"Symmetric PCKh@0.5"`` for dtf MPII,
            ``"PCKh@0.5"`` for official MPII).
        parts: primary table, part name -> score (NaN where the part had no evaluated instance).
        total: the primary table's total (dtf: unweighted mean of the parts; official: pooled).
        counts: primary table, part name -> evaluated instances (joints or sticks).
        tables: every table, by name (dtf: ``PCP``, ``Relaxed PCP``, ``PCKh``, ``Symmetric PCKh``).
        curve: the protocol's PCK(h) curve over ``CURVE_THRESHOLDS`` (or those passed), with its AUC.
        num_people: N; excluded: people left out of PCK(h) (unusable normaliser).
        backend: ``"numba"`` or ``"numpy"``.
    """

    dataset: str
    protocol: str
    description: str
    threshold: float
    pck_threshold: float
    metric: str
    parts: dict[str, float]
    total: float
    counts: dict[str, int]
    tables: dict[str, Table] = field(default_factory=dict)
    curve: Curve | None = None
    num_people: int = 0
    excluded: int = 0
    backend: str = "numba"

    def title(self) -> str:
        return (f"{self.dataset.upper()} | protocol {self.protocol} | threshold {self.threshold:g}"
                + (f" (PCK {self.pck_threshold:g})" if self.pck_threshold != self.threshold else "")
                + f" | {self.num_people} people, {self.excluded} excluded from PCK"
                + f"\n# {self.description}")

    def table(self) -> str:
        """Text tables as the reference training log prints them, titled with protocol and threshold."""
        return format_result(self.title(), list(self.tables.values()), self.curve)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """JSON-ready (NaN -> None)."""
        from deeppose_fast.metrics.tables import _json_float
        return {"dataset": self.dataset, "protocol": self.protocol, "description": self.description,
                "threshold": self.threshold, "pck_threshold": self.pck_threshold, "metric": self.metric,
                "parts": {k: _json_float(v) for k, v in self.parts.items()},
                "total": _json_float(self.total), "counts": dict(self.counts),
                "tables": {k: t.to_dict() for k, t in self.tables.items()},
                "curve": None if self.curve is None else self.curve.to_dict(),
                "num_people": self.num_people, "excluded": self.excluded, "backend": self.backend}


def _group_table(name: str, threshold: float, groups: dict[str, tuple[int, ...]], scores: np.ndarray,
                 counts: np.ndarray, total_name: str, total: float, rule: str) -> Table:
    return Table(name=name, threshold=threshold,
                 scores={g: _mean_defined(scores[list(m)]) for g, m in groups.items()},
                 counts={g: int(counts[list(m)].sum()) for g, m in groups.items()},
                 total_name=total_name, total=total, total_rule=rule)


def _pcp_tables(proto: Protocol, st: Stats, alpha: float) -> list[Table]:
    sk = proto.skeleton
    stick_index = {s.name: i for i, s in enumerate(sk.sticks)}
    parts = {p: tuple(stick_index[s] for s in names) for p, names in sk.pcp_parts.items()}
    out = []
    kinds = [("PCP", st.pcp_strict)] + ([("Relaxed PCP", st.pcp_relaxed)] if proto.relaxed_pcp else [])
    for name, correct in kinds:
        per_stick = _ratio(correct, st.pcp_total)
        part_scores = {p: _mean_defined(per_stick[list(m)]) for p, m in parts.items()}
        if proto.pcp_total == "mean":
            total, total_name = _mean_defined(part_scores.values()), "m" + name.replace(" ", "")
        else:
            total, total_name = float(correct.sum() / st.pcp_total.sum()), "Total"
        out.append(_group_table(name, alpha, parts, per_stick, st.pcp_total, total_name, total,
                                proto.pcp_total))
    return out


def _pck_tables(proto: Protocol, st: Stats, thr: float) -> list[Table]:
    sk = proto.skeleton
    per_joint = _ratio(st.pck_correct, st.pck_total)
    out = []
    if proto.per_joint_table:
        joints = {sk.joint_names[j]: (j,) for j in sk.report_order}
        out.append(_group_table(proto.pck_name, thr, joints, per_joint, st.pck_total,
                                "m" + proto.pck_name, _mean_defined(per_joint), "mean"))
    if proto.pck_total == "mean":
        group_scores = [_mean_defined(per_joint[list(m)]) for m in proto.pck_groups.values()]
        out.append(_group_table("Symmetric " + proto.pck_name, thr, proto.pck_groups, per_joint,
                                st.pck_total, "mSymmetric" + proto.pck_name, _mean_defined(group_scores),
                                "mean"))
    else:
        js = list(proto.pck_joints)
        total = float(st.pck_correct[js].sum() / st.pck_total[js].sum())
        out.append(_group_table(proto.pck_name, thr, proto.pck_groups, per_joint, st.pck_total,
                                "Total", total, "pooled"))
    return out


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
        tables += _pcp_tables(proto, st, alpha)
    tables += _pck_tables(proto, st, pck_thr)
    by_name = {t.name: t for t in tables}
    primary = tables[0] if proto.primary == "pcp" else tables[-1]

    per_joint_curve = _ratio(st.curve_correct, st.pck_total[:, None])
    if proto.pck_total == "mean":
        values = np.array([_mean_defined(per_joint_curve[:, i]) for i in range(curve_thr.size)])
    else:
        js = list(proto.pck_joints)
        values = st.curve_correct[js].sum(axis=0) / st.pck_total[js].sum()
    curve = _make_curve(proto.pck_name, proto.pck_total, curve_thr, values)

    return EvalResult(dataset=dataset, protocol=protocol, description=proto.description,
                      threshold=alpha, pck_threshold=pck_thr, metric=primary.title,
                      parts=dict(primary.scores), total=primary.total, counts=dict(primary.counts),
                      tables=by_name, curve=curve, num_people=int(gt.shape[0]), excluded=st.excluded,
                      backend=backend)
