"""Joint layouts of the supported data sets: the one place for names, flip pairs, sticks and orders.

Every array in the package that has a joint axis K is ordered as the data set's own file orders it
(``Skeleton.joint_names``). Tables are printed in the reference implementation's reporting order
(``Skeleton.report_order``).

A stick endpoint is a tuple of joint indices whose mean is the endpoint, so that LSP's torso
(mid-shoulders to mid-hips) and MPII's torso (thorax to pelvis) share one representation.

The torso diameter (``Skeleton.torso_diameter``) is the size of a person in DeepPose's cascade (Toshev &
Szegedy 2014, section 3.2): the distance between opposing torso joints, here the mean length of the two
diagonals left shoulder - right hip and right shoulder - left hip over those annotated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# the torso diagonals by joint name (both layouts name these four joints alike)
TORSO_DIAGONALS = (("l_shoulder", "r_hip"), ("r_shoulder", "l_hip"))


@dataclass(frozen=True)
class Stick:
    """A body segment for PCP: ``name``, and its two endpoints as tuples of joint indices (averaged)."""

    name: str
    a: tuple[int, ...]
    b: tuple[int, ...]


@dataclass(frozen=True)
class Skeleton:
    """Joint layout of one data set.

    Attributes:
        name: ``"lsp"`` (14 joints) or ``"mpii"`` (16 joints).
        joint_names: K names, in file order.
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        sticks: the 10 PCP sticks.
        pcp_parts: part name -> stick names averaged into it (DTF's 6 parts, left/right averaged).
        report_order: joint indices in the order the reference prints them.
        symmetric_groups: group name -> joint indices averaged into it (symmetric PCKh).
        head_top, neck: indices of the two joints whose distance is DTF's PCKh normaliser.
    """

    name: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sticks: tuple[Stick, ...]
    pcp_parts: dict[str, tuple[str, ...]] = field(hash=False)
    report_order: tuple[int, ...]
    symmetric_groups: dict[str, tuple[int, ...]] = field(hash=False)
    head_top: int
    neck: int

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        """perm such that ``flipped_joints = joints[perm]`` swaps left and right labels."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    def index(self, joint_name: str) -> int:
        return self.joint_names.index(joint_name)

    @property
    def torso_diagonals(self) -> tuple[tuple[int, int], ...]:
        """Index pairs (left shoulder, right hip) and (right shoulder, left hip) (``TORSO_DIAGONALS``)."""
        return tuple((self.index(a), self.index(b)) for a, b in TORSO_DIAGONALS)

    def torso_diameter(self, joints) -> np.ndarray:
        """The torso diameter of poses: the mean length of the torso diagonals that are annotated.

        Args:
            joints: (..., K, 2) pixels, NaN where not annotated (a diagonal counts only when all four of its
                coordinates are finite).
        Returns:
            (...,) float64: the mean of the annotated diagonals' lengths (the one length when only one is
            annotated), NaN where neither is.
        """
        j = np.asarray(joints, np.float64)
        if j.ndim < 2 or j.shape[-2:] != (self.num_joints, 2):
            raise ValueError(f"joints must have shape (..., {self.num_joints}, 2) for {self.name}, "
                             f"got {j.shape}")
        a, b = np.array(self.torso_diagonals).T
        lengths = np.hypot(*np.moveaxis(j[..., a, :] - j[..., b, :], -1, 0))  # (..., 2), NaN if unannotated
        known = np.isfinite(lengths)
        count = known.sum(-1)
        total = np.where(known, lengths, 0.0).sum(-1)
        # written out rather than np.nanmean, which warns on an all-NaN pose
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _limb_sticks(j: dict[str, int]) -> tuple[Stick, ...]:
    return (
        Stick("R upper arm", (j["r_shoulder"],), (j["r_elbow"],)),
        Stick("R lower arm", (j["r_elbow"],), (j["r_wrist"],)),
        Stick("L upper arm", (j["l_shoulder"],), (j["l_elbow"],)),
        Stick("L lower arm", (j["l_elbow"],), (j["l_wrist"],)),
        Stick("R upper leg", (j["r_hip"],), (j["r_knee"],)),
        Stick("R lower leg", (j["r_knee"],), (j["r_ankle"],)),
        Stick("L upper leg", (j["l_hip"],), (j["l_knee"],)),
        Stick("L lower leg", (j["l_knee"],), (j["l_ankle"],)),
    )


_PCP_PARTS = {
    "Head": ("head",),
    "Torso": ("torso",),
    "U Arm": ("R upper arm", "L upper arm"),
    "L Arm": ("R lower arm", "L lower arm"),
    "U Leg": ("R upper leg", "L upper leg"),
    "L Leg": ("R lower leg", "L lower leg"),
}

_LSP_NAMES = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow",
              "r_shoulder", "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top")
_lj = {n: i for i, n in enumerate(_LSP_NAMES)}

LSP = Skeleton(
    name="lsp",
    joint_names=_LSP_NAMES,
    flip_pairs=((8, 9), (7, 10), (6, 11), (2, 3), (1, 4), (0, 5)),
    sticks=(Stick("head", (_lj["head_top"],), (_lj["neck"],)),
            Stick("torso", (_lj["r_shoulder"], _lj["l_shoulder"]), (_lj["r_hip"], _lj["l_hip"])))
    + _limb_sticks(_lj),
    pcp_parts=_PCP_PARTS,
    report_order=(13, 12, 8, 7, 6, 2, 1, 0, 9, 10, 11, 3, 4, 5),
    symmetric_groups={"Head": (13,), "Neck": (12,), "Shoulder": (8, 9), "Elbow": (7, 10),
                      "Wrist": (6, 11), "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5)},
    head_top=13,
    neck=12,
)

_MPII_NAMES = ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
               "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
               "l_wrist")
_mj = {n: i for i, n in enumerate(_MPII_NAMES)}

MPII = Skeleton(
    name="mpii",
    joint_names=_MPII_NAMES,
    flip_pairs=((12, 13), (11, 14), (10, 15), (2, 3), (1, 4), (0, 5)),
    sticks=(Stick("head", (_mj["head_top"],), (_mj["upper_neck"],)),
            Stick("torso", (_mj["thorax"],), (_mj["pelvis"],)))
    + _limb_sticks(_mj),
    pcp_parts=_PCP_PARTS,
    report_order=(9, 8, 12, 11, 10, 2, 1, 0, 13, 14, 15, 3, 4, 5, 7, 6),
    symmetric_groups={"Head": (9,), "Neck": (8,), "Shoulder": (12, 13), "Elbow": (11, 14),
                      "Wrist": (10, 15), "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5),
                      "Thorax": (7,), "Pelvis": (6,)},
    head_top=9,
    neck=8,
)

SKELETONS = {"lsp": LSP, "mpii": MPII}


def get(name: str) -> Skeleton:
    """The skeleton of a layout name (``"lsp"`` or ``"mpii"``); a clear error otherwise."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown joint layout {name!r}; expected one of {sorted(SKELETONS)}") from None
