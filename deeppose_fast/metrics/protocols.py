"""The two evaluation protocols, ``dtf`` and ``official``, and the input checks shared by every metric.

Legend: N people, K joints (14 LSP, 16 MPII), S sticks (10), T curve thresholds.

A protocol is pure data (:class:`Protocol`): which PCK normaliser, which joints and groups are reported,
how totals are formed, and which PCP table exists. The kernels (``kernels.py``, ``numpy_ref.py``) only
count; ``aggregate.py`` turns counts into tables with the rules written here (for ``evaluate()``).

``dtf`` reproduces the published DeepPose tables (asanakoy/deeppose_tf):
  - PCKh normaliser = |head top - neck| of the ground truth, for LSP and MPII alike;
  - mPCKh = unweighted mean over the K joints; symmetric groups (Head, Neck, Shoulder, ... + Thorax,
    Pelvis for MPII) average left and right joints; mSymmetricPCKh = unweighted mean of the groups;
  - strict and relaxed PCP per stick; 6 parts (Head, Torso, U Arm, L Arm, U Leg, L Leg), left and right
    sticks averaged; mPCP = unweighted mean of the 6 parts.
  - Primary table: PCP for LSP, symmetric PCKh for MPII (what the papers report for each).

``official``:
  - MPII: PCKh normaliser = 0.6 x diagonal of the head box; pelvis and thorax dropped; groups Head =
    mean(upper neck, head top), Shoulder, Elbow, Wrist, Hip, Knee, Ankle; Total = correct / annotated,
    pooled over the 14 joints and all people.
  - LSP: strict PCP, parts as above, Total pooled over all 10 sticks and all people; and PCK@0.2 with the
    normaliser |L shoulder - R hip|, groups as MPII's (Head = mean(neck, head top)), Total pooled.

Rules common to both (also in ``evaluate``'s docstring):
  - a group's or part's score is the unweighted mean of its members' scores (left/right averaged);
  - thresholds are inclusive: ``error / normaliser <= t`` (PCK) and ``error <= alpha x length`` (PCP);
  - a member with no evaluated instance scores NaN and is left out of the means above.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deeppose_fast import skeleton as _skeleton

DATASETS = ("lsp", "mpii")
PROTOCOLS = ("dtf", "official")

#: PCK curve thresholds 0:0.01:0.5. Built as k / 100 so that element 10 is exactly the double 0.1
#: (some ports read index 11, i.e. 0.11, as "PCKh@0.1": here 0.1 means 0.1).
CURVE_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0

#: the official MPII normaliser: this factor times the head-box diagonal
MPII_HEAD_BOX_FACTOR = 0.6

#: the official LSP PCK threshold
LSP_PCK_THRESHOLD = 0.2


@dataclass(frozen=True)
class Protocol:
    """What one (dataset, protocol) pair reports.

    Attributes:
        name: ``"dtf"`` or ``"official"``.
        skeleton: the joint layout (``deeppose_fast.skeleton``).
        description: one line naming the normaliser and the totals, printed in table titles.
        normaliser: ``"joints"`` (distance between the ground-truth joints ``norm_joints``) or
            ``"head_box"`` (diagonal of the head box), multiplied by ``norm_scale``.
        norm_joints: (a, b) joint indices for ``normaliser == "joints"``.
        norm_scale: factor applied to the normaliser (0.6 for the official MPII head box).
        pck_name: ``"PCKh"`` or ``"PCK"``.
        pck_threshold: fixed PCK threshold of the protocol (official LSP: 0.2), or None to use the
            threshold given to ``evaluate``.
        pck_groups: ordered group name -> joint indices of the group table.
        pck_joints: the joints that the PCK total and curve pool or average over.
        pck_total: ``"mean"`` (unweighted mean of the groups) or ``"pooled"`` (correct / annotated over
            ``pck_joints``).
        per_joint_table: whether a per-joint PCKh table (report order, mean over joints) is reported.
        pcp_total: ``"mean"`` (6-part mean), ``"pooled"`` (over all sticks) or None (no PCP table).
        relaxed_pcp: whether a relaxed PCP table is reported.
        primary: ``"pcp"`` or ``"pck"``: which table gives ``EvalResult.parts`` and ``total``.
    """

    name: str
    skeleton: _skeleton.Skeleton
    description: str
    normaliser: str
    norm_joints: tuple[int, int] | None
    norm_scale: float
    pck_name: str
    pck_threshold: float | None
    pck_groups: dict[str, tuple[int, ...]] = field(hash=False)
    pck_joints: tuple[int, ...]
    pck_total: str
    per_joint_table: bool
    pcp_total: str | None
    relaxed_pcp: bool
    primary: str

    @property
    def dataset(self) -> str:
        return self.skeleton.name


def _official_groups(sk: _skeleton.Skeleton) -> dict[str, tuple[int, ...]]:
    """Head = (head top, neck); then the symmetric limb groups; pelvis and thorax dropped."""
    groups = {"Head": (sk.head_top, sk.neck)}
    for name in ("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"):
        groups[name] = sk.symmetric_groups[name]
    return groups


def get(dataset: str, protocol: str) -> Protocol:
    """The :class:`Protocol` for ``dataset`` in ``("lsp", "mpii")`` and ``protocol`` in
    ``("dtf", "official")``; a ValueError naming the valid choices otherwise."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    sk = _skeleton.get(dataset)
    if protocol == "dtf":
        return Protocol(
            name="dtf", skeleton=sk,
            description="PCKh normaliser |head top - neck|, mPCKh = mean over joints, "
                        "mPCP = mean of 6 parts, symmetric groups averaged",
            normaliser="joints", norm_joints=(sk.head_top, sk.neck), norm_scale=1.0,
            pck_name="PCKh", pck_threshold=None,
            pck_groups=dict(sk.symmetric_groups), pck_joints=tuple(range(sk.num_joints)),
            pck_total="mean", per_joint_table=True,
            pcp_total="mean", relaxed_pcp=True,
            primary="pcp" if dataset == "lsp" else "pck",
        )
    groups = _official_groups(sk)
    joints = tuple(sorted(j for g in groups.values() for j in g))
    if dataset == "mpii":
        return Protocol(
            name="official", skeleton=sk,
            description="PCKh normaliser 0.6 x head-box diagonal, pelvis and thorax dropped, "
                        "Head = mean(upper neck, head top), Total pooled over 14 joints",
            normaliser="head_box", norm_joints=None, norm_scale=MPII_HEAD_BOX_FACTOR,
            pck_name="PCKh", pck_threshold=None,
            pck_groups=groups, pck_joints=joints, pck_total="pooled", per_joint_table=False,
            pcp_total=None, relaxed_pcp=False, primary="pck",
        )
    return Protocol(
        name="official", skeleton=sk,
        description="strict PCP, Total pooled over 10 sticks; PCK normaliser |L shoulder - R hip|",
        normaliser="joints", norm_joints=(sk.index("l_shoulder"), sk.index("r_hip")), norm_scale=1.0,
        pck_name="PCK", pck_threshold=LSP_PCK_THRESHOLD,
        pck_groups=groups, pck_joints=joints, pck_total="pooled", per_joint_table=False,
        pcp_total="pooled", relaxed_pcp=False, primary="pcp",
    )


def stick_array(sk: _skeleton.Skeleton) -> np.ndarray:
    """(S, 4) int64 ``a0, a1, b0, b1``: each stick endpoint is the mean of two joints (the same joint
    twice for a single-joint endpoint, which the kernels' ``0.5 * (x + x)`` returns exactly)."""
    rows = []
    for st in sk.sticks:
        for end in (st.a, st.b):
            if not 1 <= len(end) <= 2:
                raise ValueError(f"stick {st.name!r}: an endpoint must average 1 or 2 joints, got {end}")
        a = (st.a[0], st.a[-1])
        b = (st.b[0], st.b[-1])
        rows.append(a + b)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


@dataclass
class Stats:
    """Counts from one pass over the data (both backends return this).

    Legend: K joints, S sticks, T curve thresholds.

    Attributes:
        pck_correct: (K,) int64, annotated joints of people with a usable normaliser within the threshold.
        pck_total: (K,) int64, annotated joints of people with a usable normaliser.
        curve_correct: (K, T) int64, the same as ``pck_correct`` at each curve threshold.
        excluded: people whose normaliser is unannotated, NaN, infinite or <= 0 (left out of PCK).
        pcp_strict, pcp_relaxed: (S,) int64, sticks correct under strict and relaxed PCP.
        pcp_total: (S,) int64, sticks with all endpoint joints annotated.
    """

    pck_correct: np.ndarray
    pck_total: np.ndarray
    curve_correct: np.ndarray
    excluded: int
    pcp_strict: np.ndarray
    pcp_relaxed: np.ndarray
    pcp_total: np.ndarray


# ---- input checks, shared by evaluate() and the single-metric functions ---------------------------

def real_array(x, what: str) -> np.ndarray:
    """``np.asarray(x)``, or a TypeError naming ``what`` unless it holds real numbers (not bool)."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{what} must be an array of numbers: {exc}") from None
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer)
                                     or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{what} must hold real numbers (float or int), got dtype {arr.dtype}")
    return arr


def check_poses(pred, gt, num_joints: int | None, layout: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Check predictions and ground truth; return them as C-contiguous float arrays of one dtype.

    Args:
        pred: (N, K, 2) predicted pixels; NaN = no prediction (a miss).
        gt: (N, K, 2) ground-truth pixels; NaN = not annotated.
        num_joints: the K the layout needs, or None to accept any K.
        layout: the layout's name, for error messages.
    """
    pred = real_array(pred, "pred")
    gt = real_array(gt, "gt")
    for what, arr in (("pred", pred), ("gt", gt)):
        if arr.ndim != 3 or arr.shape[2] != 2:
            raise ValueError(f"{what} must have shape (N, K, 2) (N people, K joints, x and y), "
                             f"got {arr.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    n, k, _ = gt.shape
    if num_joints is not None and k != num_joints:
        raise ValueError(f"the {layout.upper()} layout has {num_joints} joints but the arrays have "
                         f"K = {k} (shape {gt.shape}); pass the dataset that matches the arrays")
    if n == 0:
        raise ValueError("no people to evaluate: pred and gt have N = 0")
    if np.isinf(gt).any():
        raise ValueError("gt holds infinite coordinates; mark unannotated joints with NaN")
    if np.isnan(gt).all():
        raise ValueError("gt is all NaN: no joint is annotated, nothing can be evaluated")
    if pred.dtype != gt.dtype or pred.dtype not in (np.float32, np.float64):
        pred = pred.astype(np.float64)
        gt = gt.astype(np.float64)
    return np.ascontiguousarray(pred), np.ascontiguousarray(gt)


def check_visible(visible, shape: tuple[int, int]) -> np.ndarray | None:
    """(N, K) bool, or None. Integers 0/1 are accepted; anything else is an error."""
    if visible is None:
        return None
    vis = np.asarray(visible)
    if vis.shape != shape:
        raise ValueError(f"visible must have shape (N, K) = {shape}, got {vis.shape}")
    if vis.dtype != np.bool_:
        if not np.issubdtype(vis.dtype, np.integer) or not np.isin(vis, (0, 1)).all():
            raise TypeError(f"visible must be bool (or 0/1 integers), got dtype {vis.dtype}")
        vis = vis.astype(np.bool_)
    return np.ascontiguousarray(vis)


def check_head_box(head_box, n: int) -> np.ndarray:
    """(N, 4) float ``x1, y1, x2, y2``; NaN rows allowed (those people are excluded), not all NaN."""
    if head_box is None:
        raise ValueError("the official MPII protocol needs head_box (N, 4) x1, y1, x2, y2 in pixels "
                         "(PoseData.head_box); pass head_box=... or use protocol='dtf'")
    box = real_array(head_box, "head_box")
    if box.shape != (n, 4):
        raise ValueError(f"head_box must have shape (N, 4) = ({n}, 4) (x1, y1, x2, y2), got {box.shape}")
    box = box.astype(np.float64)
    if np.isnan(box).all():
        raise ValueError("head_box is all NaN (LSP has no head boxes): the official MPII protocol "
                         "cannot be computed")
    return np.ascontiguousarray(box)


def check_threshold(value, what: str = "threshold") -> float:
    t = float(value)
    if not np.isfinite(t) or t < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return t


def check_thresholds(values) -> np.ndarray:
    """(T,) float64, finite, >= 0, strictly increasing."""
    thr = np.asarray(values, dtype=np.float64).reshape(-1)
    if thr.size == 0:
        raise ValueError("thresholds must not be empty")
    if not np.isfinite(thr).all() or (thr < 0).any():
        raise ValueError(f"thresholds must be finite and >= 0, got {thr}")
    if (np.diff(thr) <= 0).any():
        raise ValueError("thresholds must be strictly increasing")
    return np.ascontiguousarray(thr)
