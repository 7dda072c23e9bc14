"""The pre-crop: how much of each image ``prepare`` stores around a person, and the contract that every
training crop drawn later fits inside it.

Rule (``PrecropRule.region``): the person box of ``codec.joint_box`` (the tight box around the annotated
joints, degenerate sides widened as the crop widens them) grown so that every crop of a recipe fits:
half-sides ``ext_max * (0.5 + shift)`` times the box side for the default recipe (extension up to 2.0,
shift up to 10 % of the crop), more with rotation or zoom-out, plus ``margin`` of the box side and
``margin_px`` pixels, then rounded outwards to whole pixels and clipped to the image. Any crop the recipe
draws, clipped to the image, therefore equals the same crop clipped to the pre-crop, and coordinates
shift by the integer offset only (stored in each record's ``meta``).

The rule is sized from an ``AugmentSpec`` (``PrecropRule.from_augment``: ``prepare``'s ``--ext-max``,
``--max-shift``, ``--max-rotation``, ``--max-scale-jitter``) and recorded in the manifest's ``precrop``
entry; ``require_covers`` refuses a recipe that reaches further than the recorded rule.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

from deeppose_fast import codec
from deeppose_fast.datasets import shards
from deeppose_fast.datasets.base import DatasetError
from deeppose_fast.specs import AugmentSpec

# rotating by more than 90 degrees needs no larger region: the bounding box of a crop turned by any angle
# fits in ``cw + ch * sin(min(angle, 90))`` (|cos| <= 1)
MAX_USEFUL_ROTATION = 90.0
_TOLERANCE = 1e-9  # settings recorded through JSON compare equal to the recipe's


@dataclass(frozen=True)
class PrecropRule:
    """How large a region around each person is kept (see the module docstring). Its fields are the
    manifest's ``precrop`` entry.

    Attributes:
        enabled: False keeps the original JPEG bytes (offset 0).
        ext_max: the largest box extension of any recipe (DTF: 2.0).
        shift: the largest shift as a fraction of the crop size (DTF: 0.1).
        rotation: the largest rotation in degrees the region must allow (DTF: 0).
        scale_jitter: the largest zoom-out ``j`` (scale ``1 - j``) the region must allow (DTF: 0).
        margin: extra fraction of the box side on each side; margin_px: extra pixels on each side.
        jpeg_quality: quality of the re-encoded region.
    """

    enabled: bool = True
    ext_max: float = 2.0
    shift: float = 0.1
    rotation: float = 0.0
    scale_jitter: float = 0.0
    margin: float = 0.05
    margin_px: int = 2
    jpeg_quality: int = 95

    @classmethod
    def from_augment(cls, augment: AugmentSpec, **others) -> "PrecropRule":
        """The rule that stores enough for every crop of ``augment`` (its largest extension, shift,
        rotation and zoom-out); ``others`` sets ``enabled``, the margins and ``jpeg_quality``."""
        return cls(ext_max=augment.ext_max, shift=augment.shift,
                   rotation=min(augment.rotation, MAX_USEFUL_ROTATION), scale_jitter=augment.scale_jitter,
                   **others)

    @classmethod
    def from_manifest(cls, precrop) -> "PrecropRule":
        """The rule a manifest's ``precrop`` entry records. An entry without ``enabled`` (data sets not
        written by ``prepare``, e.g. the test data sets of whole images) records no pre-crop: disabled."""
        if not isinstance(precrop, dict) or "enabled" not in precrop:
            return cls(enabled=False)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in precrop.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def region(self, joints: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The pre-crop ``x0, y0, x1, y1`` (integers, clipped to the image) for one person.

        Args:
            joints: (K, 2) continuous pixels, NaN where not annotated (at least one annotated).
            width, height: the image size.
        Returns:
            the region, or None when it is empty after clipping (the person lies outside the image).
        """
        valid = np.isfinite(joints).all(axis=1)
        cx, cy, bw, bh = codec.joint_box(joints[valid])
        cw, ch = bw * self.ext_max, bh * self.ext_max
        sin = math.sin(math.radians(min(abs(self.rotation), MAX_USEFUL_ROTATION)))
        zoom = 1.0 / max(1.0 - self.scale_jitter, 1e-3)
        # rotated crop's bounding half-extent (|cos| <= 1), enlarged by zoom-out, plus the centre shift
        hx = 0.5 * (cw + ch * sin) * zoom + self.shift * cw + self.margin * bw + self.margin_px
        hy = 0.5 * (ch + cw * sin) * zoom + self.shift * ch + self.margin * bh + self.margin_px
        x0, x1 = max(math.floor(cx - hx), 0), min(math.ceil(cx + hx), width)
        y0, y1 = max(math.floor(cy - hy), 0), min(math.ceil(cy + hy), height)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def shortfalls(self, augment: AugmentSpec) -> list[tuple[str, str, str]]:
        """What ``augment`` asks for beyond this rule: ``(setting, stored, prepare option)`` per setting,
        e.g. ``("rotation 30", "rotation 0", "--max-rotation 30")``; empty when every crop fits (always
        for a disabled rule: the whole images are stored). Each setting only grows the region, so the
        recipe fits exactly when none exceeds the recorded one."""
        if not self.enabled:
            return []
        wanted = [("extension", "ext_max", augment.ext_max, "--ext-max"),
                  ("shift", "shift", augment.shift, "--max-shift"),
                  ("rotation", "rotation", min(augment.rotation, MAX_USEFUL_ROTATION), "--max-rotation"),
                  ("scale jitter", "scale_jitter", augment.scale_jitter, "--max-scale-jitter")]
        return [(f"{label} {value:g}", f"{label} {getattr(self, field):g}", f"{option} {value:g}")
                for label, field, value, option in wanted if value > getattr(self, field) + _TOLERANCE]


def require_covers(manifest_dir: str | os.PathLike, augment: AugmentSpec, manifest=None) -> None:
    """Refuse a recipe whose crops reach outside the region ``prepare`` stored around each person.

    Args:
        manifest_dir: a prepared data set folder.
        augment: the training recipe's crop settings.
        manifest: its ``shards.Manifest`` (or manifest dict) when the caller has read it already.
    Raises:
        DatasetError: naming the manifest, each setting outside the stored region (e.g. ``rotation 30``)
            and the ``prepare`` command, with the option that fixes it (``--max-rotation 30``).
        shards.ShardError: the folder holds no readable manifest.
    """
    if manifest is None:
        manifest = shards.Manifest.read(manifest_dir)
    elif isinstance(manifest, dict):
        manifest = shards.Manifest.from_dict(manifest)
    rule = PrecropRule.from_manifest(manifest.precrop)
    missing = rule.shortfalls(augment)
    if not missing:
        return
    asked = ", ".join(s for s, _, _ in missing)
    stored = ", ".join(s for _, s, _ in missing)
    options = " ".join(o for _, _, o in missing)
    wider = {**rule.to_dict(), **{f: max(v, getattr(rule, f)) for f, v in _fields(augment).items()}}
    command = shards.rebuild_command(manifest_dir, manifest.replace(precrop=wider))
    raise DatasetError(
        f"{os.path.join(manifest_dir, shards.MANIFEST)}: the recipe's crops reach outside the region prepare "
        f"stored around each person ({asked}; stored for {stored}). Prepare the data set again with "
        f"{options}: `{command} --replace`, or lower the setting.")


def _fields(augment: AugmentSpec) -> dict:
    """The pre-crop fields that a rule sized from ``augment`` records."""
    rule = PrecropRule.from_augment(augment)
    return {f: getattr(rule, f) for f in ("ext_max", "shift", "rotation", "scale_jitter")}
