"""The law of a cascade stage's displacements: what stage s >= 2 is trained on (Toshev & Szegedy 2014,
section 3.2).

Legend: N people, K joints, M = N * n_draws simulated estimates; coordinates in source-image pixels.

Stage s refines joint ``i`` from a crop about stage s-1's estimate ``y_i``. It is trained on the training
people with *simulated* stage s-1 estimates, whose errors follow the law fitted to stage s-1's real errors
on the training split, per joint, in units of the torso diameter:

    d_i = (truth_i - estimate_i) / diam(estimate)        d_i ~ N(mean_i, cov_i)  (2-D normal)

Sign convention: ``d`` points from the estimate to the truth, so ``estimate + mean * diam`` is on average
the truth. ``diam`` is ``Skeleton.torso_diameter`` of the *estimate* in ``fit`` (at test time only the
estimate is known) and of the *truth* in ``sample_centres`` (the simulation has no estimate yet).

``fit`` computes the law from stage s-1's predictions, ``sample_centres`` draws simulated estimates from
it, ``save`` / ``load`` keep it (JSON) in the stage's run with its ``source``: what produced it (the stage
s-1 checkpoint and step, the data set and its manifest's sha256, the stage; ``stage_source``). ``load``
refuses a file whose source is not the expected one (stale), naming the refit command ``REFIT_COMMAND``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeppose_fast import atomic
from deeppose_fast import skeleton as skeleton_lib
from deeppose_fast.datasets.shards.format import MANIFEST
from deeppose_fast.skeleton import Skeleton

FORMAT = "deeppose-fast-cascade-stats/1"
REFIT_COMMAND = "deeppose-fast cascade-stats RUN"  # the command that fits (and refits) the statistics


def default_file(stage: int) -> str:
    """Where ``REFIT_COMMAND`` writes stage ``stage``'s statistics in the run of stage ``stage - 1``."""
    return f"cascade-stats-stage{stage}.json"


DEFAULT_FILE = default_file(2)
_REFIT = f"refit them with `{REFIT_COMMAND}`"
_PSD_TOL = 1e-9  # relative: rank-1 covariances come out with determinants of round-off size, either sign


class StatsError(ValueError):
    """Displacement statistics that are missing, corrupt or malformed (the message names the file)."""


class StaleStatsError(StatsError):
    """Displacement statistics fitted for something else than what they are used with (another checkpoint,
    step, data set or stage)."""


def _plain(source) -> dict:
    """``source`` as the JSON object it is stored as (paths as strings, NumPy scalars as numbers), so that
    the one in memory and the one read back compare equal."""
    if not isinstance(source, dict):
        raise StatsError(f"source must be a dict, got {type(source).__name__}")

    def default(value):
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"source value {value!r} ({type(value).__name__}) is not JSON-serialisable")

    try:
        return json.loads(json.dumps(source, default=default, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise StatsError(f"source: {e}") from None


def _frozen(values, dtype) -> np.ndarray:
    a = np.array(values, dtype)  # a copy: the caller's array may change, these may not
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class DisplacementStats:
    """Per joint, the 2-D normal law of ``d = (truth - estimate) / diam(estimate)`` (module docstring).

    Attributes:
        mean: (K, 2) float64 ``x, y``, torso diameters: ``estimate + mean * diam`` is on average the truth.
        cov: (K, 2, 2) float64 covariance (ddof=1), torso diameters squared; symmetric, positive
            semi-definite (possibly singular).
        count: (K,) int64, the people whose displacement of that joint was used (>= 2 each).
        skeleton: the joint layout's name (``skeleton.SKELETONS``); K is its number of joints.
        source: JSON object identifying what produced the statistics (``stage_source``); compared on
            ``load``.
    Arrays are read-only copies; ``==`` compares every field exactly.
    """

    mean: np.ndarray
    cov: np.ndarray
    count: np.ndarray
    skeleton: str
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.skeleton, str):
            raise StatsError(f"skeleton must be a joint layout's name, got {self.skeleton!r}")
        try:
            sk = skeleton_lib.get(self.skeleton)
        except ValueError as e:
            raise StatsError(str(e)) from None
        K = sk.num_joints
        for name, shape in (("mean", (K, 2)), ("cov", (K, 2, 2)), ("count", (K,))):
            try:
                a = np.asarray(getattr(self, name), np.float64)
            except (TypeError, ValueError) as e:
                raise StatsError(f"{name}: not an array of numbers ({e})") from None
            if a.shape != shape:
                raise StatsError(f"{name} has shape {a.shape}, expected {shape} ({K} joints of {sk.name})")
            if not np.isfinite(a).all():
                raise StatsError(f"{name} holds NaN or infinity")
            if name == "count" and ((a != np.round(a)) | (a < 2)).any():
                raise StatsError(f"count must be integers >= 2, got {a.tolist()}")
            object.__setattr__(self, name, _frozen(a, np.int64 if name == "count" else np.float64))
        c = self.cov
        c00, c01, c10, c11 = c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1]
        scale = np.maximum(np.abs(c).max(axis=(1, 2)), np.finfo(np.float64).tiny)
        bad = ((np.abs(c01 - c10) > _PSD_TOL * scale) | (c00 < 0) | (c11 < 0)
               | (c00 * c11 - c01 * c10 < -_PSD_TOL * scale ** 2))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise StatsError(f"cov of joint {sk.joint_names[j]!r} is not a symmetric positive semi-definite "
                             f"2x2 matrix: {c[j].tolist()}")
        object.__setattr__(self, "source", _plain(self.source))

    @classmethod
    def isotropic(cls, skeleton: str, variance: float, count: int = 2) -> "DisplacementStats":
        """A law with no bias and the same round spread for every joint (``variance`` torso diameters
        squared per axis): for benchmarks and checks that need simulated estimates but no fitted stage."""
        k = skeleton_lib.get(skeleton).num_joints
        return cls(mean=np.zeros((k, 2)), cov=np.tile(np.eye(2) * variance, (k, 1, 1)), count=np.full(k, count),
                   skeleton=skeleton)

    __hash__ = None

    def __eq__(self, other):
        if not isinstance(other, DisplacementStats):
            return NotImplemented
        return (self.skeleton == other.skeleton and self.source == other.source
                and all(np.array_equal(getattr(self, n), getattr(other, n)) for n in ("mean", "cov", "count")))

    @property
    def num_joints(self) -> int:
        return int(self.mean.shape[0])

    def to_dict(self) -> dict:
        """The JSON object: ``format``, ``skeleton``, ``joint_names`` (for the reader), ``count``, ``mean``,
        ``cov`` (nested lists; Python floats, whose JSON text reads back bit-exact), ``source``."""
        return {"format": FORMAT, "skeleton": self.skeleton,
                "joint_names": list(skeleton_lib.get(self.skeleton).joint_names),
                "units": "torso diameters of the estimate; d = (truth - estimate) / diam(estimate)",
                "count": self.count.tolist(), "mean": self.mean.tolist(), "cov": self.cov.tolist(),
                "source": self.source}

    @classmethod
    def from_dict(cls, values: dict) -> "DisplacementStats":
        """The statistics from ``to_dict``'s object; ``StatsError`` (no file name) when it is not one."""
        if not isinstance(values, dict):
            raise StatsError(f"expected a JSON object, got {type(values).__name__}")
        if values.get("format") != FORMAT:
            raise StatsError(f"format {values.get('format')!r}, expected {FORMAT!r}")
        missing = [k for k in ("skeleton", "count", "mean", "cov", "source") if k not in values]
        if missing:
            raise StatsError(f"missing field(s) {', '.join(missing)}")
        stats = cls(mean=values["mean"], cov=values["cov"], count=values["count"], skeleton=values["skeleton"],
                    source=values["source"])
        names = values.get("joint_names")
        expected = list(skeleton_lib.get(stats.skeleton).joint_names)
        if names is not None and list(names) != expected:
            raise StatsError(f"joint_names {names} are not {stats.skeleton}'s {expected}")
        return stats


def _checked_poses(name: str, values, skeleton: Skeleton) -> np.ndarray:
    a = np.asarray(values, np.float64)
    if a.ndim != 3 or a.shape[1:] != (skeleton.num_joints, 2):
        raise ValueError(f"{name} must have shape (N, {skeleton.num_joints}, 2) for {skeleton.name}, got {a.shape}")
    return a


def fit(pred, gt, skeleton: Skeleton, *, source: dict | None = None) -> DisplacementStats:
    """The law of stage s-1's displacements on a split (module docstring).

    Args:
        pred: (N, K, 2) stage s-1's estimates, source pixels, all finite.
        gt: (N, K, 2) the ground truth, source pixels, NaN where not annotated (a joint counts when both its
            coordinates are finite).
        skeleton: the joint layout (K joints).
        source: what produced ``pred`` (``stage_source``); stored with the statistics.
    Returns:
        ``DisplacementStats`` of ``d = (gt - pred) / diam(pred)``, ``diam = skeleton.torso_diameter(pred)``
        (the estimate's: at test time only it is known): per joint, the mean and the covariance (ddof=1)
        of the people where that joint is annotated. People whose estimate has a non-finite or
        non-positive diameter are left out (``count`` says how many were used per joint).
    Raises:
        ValueError: shapes, a non-finite ``pred``, or a joint with fewer than 2 usable people (named).
    """
    pred = _checked_poses("pred", pred, skeleton)
    gt = _checked_poses("gt", gt, skeleton)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    if not np.isfinite(pred).all():
        raise ValueError("pred must be finite (stage s-1's estimates of every joint)")
    diam = skeleton.torso_diameter(pred)  # (N,)
    usable = np.isfinite(diam) & (diam > 0)
    valid = usable[:, None] & np.isfinite(gt).all(-1)  # (N, K)
    count = valid.sum(0)
    few = np.flatnonzero(count < 2)
    if few.size:
        names = ", ".join(f"{skeleton.joint_names[j]!r} (index {j}): {count[j]}" for j in few)
        raise ValueError(f"too few people to fit a covariance (need 2 per joint, with the joint annotated "
                         f"and an estimate of positive torso diameter) for joint(s) {names}, of {len(gt)} people")
    with np.errstate(invalid="ignore", divide="ignore"):  # left-out people: masked below
        d = (gt - pred) / diam[:, None, None]
    d = np.where(valid[..., None], d, 0.0)
    mean = d.sum(0) / count[:, None]
    dev = np.where(valid[..., None], d - mean, 0.0)
    cov = np.einsum("nki,nkj->kij", dev, dev) / (count - 1)[:, None, None]
    cov = 0.5 * (cov + cov.transpose(0, 2, 1))  # exactly symmetric, whatever the summation order
    return DisplacementStats(mean=mean, cov=cov, count=count, skeleton=skeleton.name, source=source or {})


def _cholesky_2x2(cov: np.ndarray) -> np.ndarray:
    """(K, 2, 2) lower-triangular ``L`` with ``L @ L.T == cov`` for symmetric positive semi-definite
    (K, 2, 2) ``cov``, singular ones included (``np.linalg.cholesky`` refuses those)."""
    c00, c01, c11 = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    l00 = np.sqrt(np.maximum(c00, 0.0))
    # c00 == 0 forces c01 == 0 in a PSD matrix: that column of L is then 0
    l10 = np.divide(c01, l00, out=np.zeros_like(c01), where=l00 > 0)
    l11 = np.sqrt(np.maximum(c11 - l10 ** 2, 0.0))  # clamp: a rank-1 matrix leaves round-off of either sign
    L = np.zeros_like(cov)
    L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = l00, l10, l11
    return L


def sample_centres(rng: np.random.Generator, gt, stats: DisplacementStats, skeleton: Skeleton,
                   n_draws: int) -> tuple[np.ndarray, np.ndarray]:
    """Simulated stage s-1 estimates of the training people, ``n_draws`` per person: the crop centres of
    stage s's training samples (flips are the crop's own draw, applied after, in the crop frame).

    ``estimate_i = gt_i - d_i * diam`` with ``d_i ~ N(mean_i, cov_i)`` independently per joint and draw, so
    that ``(gt - estimate) / diam`` has the fitted law. ``diam`` is the *ground truth's* torso diameter: the
    simulation has no estimate yet (``fit`` divides by the estimate's, which differs from the truth's only
    through the displacements of the four torso joints).

    Args:
        rng: the generator drawn from: ``M * K * 2`` standard normals, for every row whatever is annotated
            (a person's draws do not depend on the other people's annotations).
        gt: (N, K, 2) ground truth, source pixels, NaN where not annotated.
        stats: the law (its ``skeleton`` must be ``skeleton``'s).
        n_draws: draws per person (>= 1).
    Returns:
        ``centres`` (M, K, 2) float64 and ``diam`` (M,) float64, M = N * n_draws, person-major: row ``r``
        is person ``r // n_draws`` (``np.repeat`` order). Flagged, not skipped: a person whose ground truth
        has no torso diameter (no diagonal annotated) has NaN ``diam`` and NaN centres in all its rows; a
        joint not annotated has NaN centres. A centre is finite exactly where it can be used.
    """
    gt = _checked_poses("gt", gt, skeleton)
    if stats.skeleton != skeleton.name:
        raise ValueError(f"the statistics are for {stats.skeleton!r} joints, the data has {skeleton.name!r}")
    if isinstance(n_draws, (bool, float, np.floating)) or int(n_draws) < 1:
        raise ValueError(f"n_draws must be an integer >= 1, got {n_draws!r}")
    n_draws = int(n_draws)
    gt = np.repeat(gt, n_draws, axis=0)  # (M, K, 2)
    diam = np.repeat(skeleton.torso_diameter(gt[::n_draws]), n_draws)  # (M,)
    z = rng.standard_normal(gt.shape)  # (M, K, 2)
    L = _cholesky_2x2(stats.cov)  # (K, 2, 2)
    d = stats.mean + np.einsum("kij,mkj->mki", L, z)  # (M, K, 2), row m joint k: mean_k + L_k @ z_mk
    centres = gt - d * diam[:, None, None]  # NaN propagates from gt and diam: the flags
    return centres, diam


def stage_source(*, stage: int, checkpoint, step: int, data) -> dict:
    """The ``source`` of statistics fitted for stage ``stage`` (>= 2) from stage ``stage - 1``'s
    ``checkpoint`` (its folder; ``step`` its step) on the prepared data set folder ``data``: paths resolved,
    and the sha256 of ``data/manifest.json`` (a data set rebuilt in place gets another one)."""
    if isinstance(stage, bool) or int(stage) != stage or stage < 2:
        raise ValueError(f"stage must be an integer >= 2 (stage 1 is the whole-person network), got {stage!r}")
    manifest = Path(data) / MANIFEST
    try:
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise StatsError(f"{manifest}: not found; the data set is not prepared") from None
    return {"stage": int(stage), "checkpoint": str(Path(checkpoint).resolve()), "step": int(step),
            "data": str(Path(data).resolve()), "manifest_sha256": digest}


def save(stats: DisplacementStats, path: str | os.PathLike) -> Path:
    """Write ``stats`` to ``path`` as JSON, atomically (a temporary file in the same folder, flushed to
    disk, then ``os.replace``): ``path`` holds the old statistics or the new ones, never a part."""
    return atomic.write_json(stats.to_dict(), path, indent=1, allow_nan=False)


def _differences(found: dict, expect: dict) -> list[str]:
    """``KEY FOUND where EXPECTED was expected`` for each key whose value differs (or is in one only)."""
    def shown(values, key):
        return repr(values[key]) if key in values else "(none)"
    return [f"{key} {shown(found, key)} where {shown(expect, key)} was expected"
            for key in sorted(set(found) | set(expect)) if key not in found or key not in expect
            or found[key] != expect[key]]


def load(path: str | os.PathLike, expect: dict | None = None) -> DisplacementStats:
    """Read statistics written by ``save``.

    Args:
        expect: the ``source`` they must have (``stage_source`` of what they are used with); None: any.
    Raises:
        StatsError: the file is missing, not JSON, or not valid statistics; StaleStatsError: its ``source``
        differs from ``expect``. Each message is one line naming the file, what is wrong and the refit
        command (``REFIT_COMMAND``).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StatsError(f"{path}: no displacement statistics (not fitted yet); {_REFIT}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StatsError(f"{path}: unreadable ({type(e).__name__}: {e}); {_REFIT}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise StatsError(f"{path}: not valid JSON ({e}); {_REFIT}") from None
    try:
        stats = DisplacementStats.from_dict(values)
    except StatsError as e:
        raise StatsError(f"{path}: not valid displacement statistics: {e}; {_REFIT}") from None
    if expect is not None:
        diffs = _differences(stats.source, _plain(expect))
        if diffs:
            raise StaleStatsError(f"{path}: stale displacement statistics: {'; '.join(diffs)}; {_REFIT}")
    return stats
