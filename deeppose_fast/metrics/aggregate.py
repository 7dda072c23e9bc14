"""From counts to scores: the per-part tables and the PCK curve of a protocol, built from the ``Stats``
one kernel pass returns (either backend).

Legend: K joints, S sticks, T curve thresholds. Scores are fractions in [0, 1]; NaN where nothing was
evaluated. A part's score is the unweighted mean of its members' scores (sticks or joints), as DTF's
tables report them.
"""
from __future__ import annotations

import math

import numpy as np

from deeppose_fast.metrics.protocols import Protocol, Stats
from deeppose_fast.metrics.tables import Curve, Table


def ratio(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    """correct / total as float64 (broadcast), NaN where total is 0."""
    correct, total = np.broadcast_arrays(correct, total)
    out = np.full(correct.shape, np.nan)
    np.divide(correct, total, out=out, where=total > 0)
    return out


def mean_defined(values) -> float:
    """Unweighted mean of the non-NaN values; NaN if there are none."""
    if isinstance(values, np.ndarray):
        values = values.tolist()  # Python floats: far cheaper to loop over than NumPy scalars
    vals = [v for v in values if not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else math.nan


def make_curve(name: str, rule: str, thresholds: np.ndarray, values: np.ndarray) -> Curve:
    """A ``Curve`` of values (T,) at thresholds (T,), with its trapezoid area over the threshold range
    (the single value when T = 1)."""
    if thresholds.size > 1:
        auc = float(np.trapezoid(values, thresholds) / (thresholds[-1] - thresholds[0]))
    else:
        auc = float(values[0])
    return Curve(name=name, rule=rule, thresholds=[float(t) for t in thresholds],
                 values=[float(v) for v in values], auc=auc)


def _group_table(name: str, threshold: float, groups: dict[str, tuple[int, ...]], scores: np.ndarray,
                 counts: np.ndarray, total_name: str, total: float, rule: str) -> Table:
    """A table with one column per group of members (indices into ``scores`` and ``counts``)."""
    return Table(name=name, threshold=threshold,
                 scores={g: mean_defined(scores[list(m)]) for g, m in groups.items()},
                 counts={g: int(counts[list(m)].sum()) for g, m in groups.items()},
                 total_name=total_name, total=total, total_rule=rule)


def pcp_tables(proto: Protocol, st: Stats, alpha: float) -> list[Table]:
    """``PCP`` (and ``Relaxed PCP`` where the protocol reports it), one column per body part."""
    sk = proto.skeleton
    stick_index = {s.name: i for i, s in enumerate(sk.sticks)}
    parts = {p: tuple(stick_index[s] for s in names) for p, names in sk.pcp_parts.items()}
    out = []
    kinds = [("PCP", st.pcp_strict)] + ([("Relaxed PCP", st.pcp_relaxed)] if proto.relaxed_pcp else [])
    for name, correct in kinds:
        per_stick = ratio(correct, st.pcp_total)
        part_scores = {p: mean_defined(per_stick[list(m)]) for p, m in parts.items()}
        if proto.pcp_total == "mean":
            total, total_name = mean_defined(part_scores.values()), "m" + name.replace(" ", "")
        else:
            total, total_name = float(correct.sum() / st.pcp_total.sum()), "Total"
        out.append(_group_table(name, alpha, parts, per_stick, st.pcp_total, total_name, total,
                                proto.pcp_total))
    return out


def pck_tables(proto: Protocol, st: Stats, thr: float) -> list[Table]:
    """The per-joint PCK(h) table (where the protocol reports it), then the symmetric (dtf) or the
    official grouped table."""
    sk = proto.skeleton
    per_joint = ratio(st.pck_correct, st.pck_total)
    out = []
    if proto.per_joint_table:
        joints = {sk.joint_names[j]: (j,) for j in sk.report_order}
        out.append(_group_table(proto.pck_name, thr, joints, per_joint, st.pck_total,
                                "m" + proto.pck_name, mean_defined(per_joint), "mean"))
    if proto.pck_total == "mean":
        group_scores = [mean_defined(per_joint[list(m)]) for m in proto.pck_groups.values()]
        out.append(_group_table("Symmetric " + proto.pck_name, thr, proto.pck_groups, per_joint,
                                st.pck_total, "mSymmetric" + proto.pck_name, mean_defined(group_scores),
                                "mean"))
    else:
        js = list(proto.pck_joints)
        total = float(st.pck_correct[js].sum() / st.pck_total[js].sum())
        out.append(_group_table(proto.pck_name, thr, proto.pck_groups, per_joint, st.pck_total,
                                "Total", total, "pooled"))
    return out


def protocol_curve(proto: Protocol, st: Stats, thresholds: np.ndarray) -> Curve:
    """The protocol's PCK(h) curve at thresholds (T,): the mean over joints (dtf) or pooled over the
    protocol's joints (official), as its PCK total."""
    if proto.pck_total == "mean":
        per_joint = ratio(st.curve_correct, st.pck_total[:, None])  # (K, T)
        values = np.array([mean_defined(per_joint[:, i]) for i in range(thresholds.size)])
    else:
        js = list(proto.pck_joints)
        values = st.curve_correct[js].sum(axis=0) / st.pck_total[js].sum()
    return make_curve(proto.pck_name, proto.pck_total, thresholds, values)
