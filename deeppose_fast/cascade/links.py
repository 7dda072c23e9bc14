"""The links of a cascade: which checkpoint is which stage, and the crop side of a stage (no DALI, no data:
what ``predict``, ``export`` and the data pipelines share).

A stage-s checkpoint names the checkpoint of stage s-1 it was trained on (its configuration's
``previous``, resolved to one checkpoint when training started), which names its own, down to stage 1:
``chain(snapshot)`` follows the links and refuses a chain with a missing or inconsistent link, naming the
file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeppose_fast import checkpoint
from deeppose_fast import skeleton as skeleton_lib


class CascadeError(ValueError):
    """A cascade that cannot run: a missing or inconsistent link of the snapshot chain (the message names
    the file)."""


@dataclass
class Stage:
    """One link of a cascade: the stage number, its checkpoint (None where its network is given, as in a
    benchmark) and its crop side in torso diameters (``sigma``; unused by stage 1)."""

    stage: int
    ckpt: checkpoint.Checkpoint | None
    sigma: float = 0.0

    @property
    def config(self) -> dict:
        return self.ckpt.meta.get("config", {})


def stage_of(ckpt: checkpoint.Checkpoint) -> int:
    """The cascade stage a checkpoint was trained as (1 for a run of the whole-person network)."""
    return int(ckpt.meta.get("config", {}).get("stage", 1))


def chain(snapshot, *, stop: int = 1) -> list[Stage]:
    """The stages of a snapshot's cascade, stage ``stop`` (default 1) first, the snapshot's own last.

    Args:
        snapshot: a checkpoint folder, a run folder (its newest checkpoint) or a loaded ``Checkpoint``.
    Raises:
        checkpoint.CheckpointError: the snapshot is missing or corrupt. CascadeError: a link is missing
        (its checkpoint was deleted or moved), is not of the stage before, or was trained for other joints.
    """
    ckpt = snapshot if isinstance(snapshot, checkpoint.Checkpoint) else checkpoint.load(snapshot)
    links = [_link(ckpt)]
    while links[0].stage > stop:
        child = links[0]
        previous = child.config.get("previous") or ""
        if not previous:
            raise CascadeError(f"{child.ckpt.path}: a stage-{child.stage} checkpoint that names no stage "
                               f"{child.stage - 1} (its configuration's 'previous' is empty)")
        try:
            parent = checkpoint.load(previous)
        except checkpoint.CheckpointError as e:
            raise CascadeError(f"{child.ckpt.path}: the cascade's stage {child.stage - 1} is missing: {e}; "
                               f"restore that checkpoint (stage {child.stage} was trained on it)") from None
        if stage_of(parent) != child.stage - 1:
            raise CascadeError(f"{child.ckpt.path}: its previous stage {parent.path} is a stage-"
                               f"{stage_of(parent)} checkpoint, expected stage {child.stage - 1}")
        if parent.num_joints != child.ckpt.num_joints:
            raise CascadeError(f"{child.ckpt.path}: {child.ckpt.num_joints} joints, its previous stage "
                               f"{parent.path} {parent.num_joints}")
        links.insert(0, _link(parent))
    return links


def _link(ckpt: checkpoint.Checkpoint) -> Stage:
    """The ``Stage`` a checkpoint is: its stage and crop side, from the configuration it records."""
    return Stage(stage_of(ckpt), ckpt, float(ckpt.meta.get("config", {}).get("sigma", 0.0)))


def crop_sides(pred: np.ndarray, skeleton: skeleton_lib.Skeleton, sigma: float,
               fallback: np.ndarray) -> np.ndarray:
    """(N,) the side of each person's joint crops: ``sigma`` times the torso diameter of the current
    estimate ``pred`` (N, K, 2); where that is not positive, ``sigma`` times ``fallback`` (N,) (the
    longer side of the stage-1 crop box)."""
    diam = skeleton.torso_diameter(pred)
    ok = np.isfinite(diam) & (diam > 0)
    return sigma * np.where(ok, diam, fallback)


def run_folder(ckpt: checkpoint.Checkpoint) -> Path:
    """The run folder holding a checkpoint (``RUN/checkpoints/ckpt-N`` -> ``RUN``)."""
    return Path(ckpt.path).resolve().parent.parent
