"""The pre-crop: how much of each image ``prepare`` stores around a person, at what resolution, and the
contract that every training crop drawn later fits inside it and is not upsampled from it.

Rule (``PrecropRule.region``): the person box of ``codec.joint_box`` (the tight box around the annotated
joints, degenerate sides widened as the crop widens them) grown so that every crop of a recipe fits:
half-sides ``ext_max * (0.5 + shift)`` times the box side for the default recipe (extension up to 2.0,
shift up to 10 % of the crop), more with rotation or zoom-out, plus ``margin`` of the box side and
``margin_px`` pixels, then rounded outwards to whole pixels and clipped to the image. Any crop the recipe
draws, clipped to the image, therefore equals the same crop clipped to the pre-crop, and coordinates
shift by the integer offset only (stored in each record's ``meta``).

Resolution (``PrecropRule.stored_size``): the region is stored scaled down, per axis, so that the
recipe's *smallest* crop (smallest extension ``ext_min``, largest zoom-in ``1 + scale_jitter``, the
largest shift towards an image border that clips it) still maps at least 1:1 onto the ``resolution`` x
``resolution`` network input, times ``1 + resolution_margin``; never upscaled. Rotation needs no more:
it turns the output square, whose sampling density along each source axis stays that of the unrotated
crop. The record keeps the exact scale (``stored / source`` size per axis) so joints map back to source
pixels (``shards.decode_record``) and the crop geometry is computed in the source frame
(``codec.crop_geometry(scale=...)``): a scaled region gives the same crops, resampled.

The rule is sized from an ``AugmentSpec`` and the network input size (``PrecropRule.from_augment``:
``prepare``'s ``--min-extension``, ``--ext-max``, ``--max-shift``, ``--max-rotation``,
``--max-scale-jitter``, ``--resolution``, ``--resolution-margin``) and recorded in the manifest's
``precrop`` entry; ``require_covers`` refuses a recipe that reaches further or needs more resolution than
the recorded rule, naming the ``prepare`` option that fixes it.
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
DEFAULT_RESOLUTION = 227  # the reference recipe's network input
DEFAULT_RESOLUTION_MARGIN = 0.25  # chosen by measurement: README "Input at real scale"


@dataclass(frozen=True)
class PrecropRule:
    """How large a region around each person is kept (see the module docstring). Its fields are the
    manifest's ``precrop`` entry.

    Attributes:
        enabled: False keeps the original JPEG bytes (offset 0).
        ext_max: the largest box extension of any recipe (DTF: 2.0).
        shift: the largest shift as a fraction of the crop size (DTF: 0.1).
        rotation: the largest rotation in degrees the region must allow (DTF: 0).
        scale_jitter: the largest zoom ``j`` (scale ``1 - j`` to ``1 + j``) the region must allow (DTF: 0).
        margin: extra fraction of the box side on each side; margin_px: extra pixels on each side.
        jpeg_quality: quality of the re-encoded region.
        resolution: the network input side S the stored region must serve at least 1:1 (0: keep the
            source resolution).
        ext_min: the smallest box extension of any recipe (DTF: 1.0 for MPII, 1.2 and 1.5 for LSP).
        resolution_margin: store ``1 + resolution_margin`` times the pixels the smallest crop needs.
    """

    enabled: bool = True
    ext_max: float = 2.0
    shift: float = 0.1
    rotation: float = 0.0
    scale_jitter: float = 0.0
    margin: float = 0.05
    margin_px: int = 2
    jpeg_quality: int = 95
    resolution: int = DEFAULT_RESOLUTION
    ext_min: float = 1.0
    resolution_margin: float = DEFAULT_RESOLUTION_MARGIN

    @classmethod
    def from_augment(cls, augment: AugmentSpec, input_size: int = DEFAULT_RESOLUTION, **others) -> "PrecropRule":
        """The rule that stores enough for every crop of ``augment`` (its extension range, shift, rotation
        and zoom) at a network input of ``input_size``; ``others`` sets ``enabled``, the margins,
        ``resolution_margin`` and ``jpeg_quality``."""
        return cls(ext_max=augment.ext_max, shift=augment.shift,
                   rotation=min(augment.rotation, MAX_USEFUL_ROTATION), scale_jitter=augment.scale_jitter,
                   ext_min=augment.ext_min, resolution=input_size, **others)

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
        hx, hy = self.half_extents(bw, bh)
        x0, x1 = max(math.floor(cx - hx), 0), min(math.ceil(cx + hx), width)
        y0, y1 = max(math.floor(cy - hy), 0), min(math.ceil(cy + hy), height)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def half_extents(self, bw, bh):
        """The region's half-width and half-height about the person box's centre, before rounding and
        clipping, for box sides ``bw``, ``bh`` (pixels; floats or arrays)."""
        cw, ch = bw * self.ext_max, bh * self.ext_max
        sin = math.sin(math.radians(min(abs(self.rotation), MAX_USEFUL_ROTATION)))
        zoom = 1.0 / max(1.0 - self.scale_jitter, 1e-3)
        # rotated crop's bounding half-extent (|cos| <= 1), enlarged by zoom-out, plus the centre shift
        hx = 0.5 * (cw + ch * sin) * zoom + self.shift * cw + self.margin * bw + self.margin_px
        hy = 0.5 * (ch + cw * sin) * zoom + self.shift * ch + self.margin * bh + self.margin_px
        return hx, hy

    def stored_size(self, joints: np.ndarray, region: tuple[int, int, int, int], width: int,
                    height: int) -> tuple[int, int]:
        """``(w, h)`` of the JPEG that stores ``region`` of one person (module docstring: the resolution
        rule); the region's own size when the rule keeps the source resolution or needs all of it.

        Args:
            joints: (K, 2) continuous pixels, NaN where not annotated (at least one annotated).
            region: ``x0, y0, x1, y1`` from ``region``; width, height: the image size.
        """
        x0, y0, x1, y1 = region
        w, h = x1 - x0, y1 - y0
        if not self.enabled or self.resolution <= 0:
            return w, h
        valid = np.isfinite(joints).all(axis=1)
        cx, cy, bw, bh = codec.joint_box(joints[valid])
        need = (1.0 + self.resolution_margin) * self.resolution * (1.0 + self.scale_jitter)
        sx = need / self._smallest_span(cx, bw, width)
        sy = need / self._smallest_span(cy, bh, height)
        return min(w, math.ceil(w * sx)), min(h, math.ceil(h * sy))

    def _smallest_span(self, centre: float, side: float, limit: int) -> float:
        """The shortest side, along one axis, of any crop of the recipe after clipping to the image: the
        smallest extension, shifted as far as allowed towards the border that clips it most (the clipped
        length only grows with the extension, and is concave in the shift: its minimum is at an end)."""
        span = side * self.ext_min
        d = max(min(self.shift * span, 0.5 * (span - side)), 0.0)
        lengths = [min(limit, c + 0.5 * span) - max(0.0, c - 0.5 * span) for c in (centre - d, centre + d)]
        return max(min(lengths), 1.0)

    def shortfalls(self, augment: AugmentSpec, input_size: int | None = None) -> list[tuple[str, str, str]]:
        """What ``augment`` at a network input of ``input_size`` asks for beyond this rule: ``(setting,
        stored, prepare option)`` per setting, e.g. ``("rotation 30", "rotation 0", "--max-rotation 30")``;
        empty when every crop fits and none is upsampled from the stored region (always for a disabled
        rule: the whole images are stored). Each setting only grows the region or the resolution it
        needs, so the recipe fits exactly when none goes beyond the recorded one."""
        if not self.enabled:
            return []
        # (label, recorded, wanted, prepare option, wanted > recorded is the shortfall)
        wanted = [("extension", self.ext_max, augment.ext_max, "--ext-max", True),
                  ("shift", self.shift, augment.shift, "--max-shift", True),
                  ("rotation", self.rotation, min(augment.rotation, MAX_USEFUL_ROTATION), "--max-rotation", True),
                  ("scale jitter", self.scale_jitter, augment.scale_jitter, "--max-scale-jitter", True)]
        if self.resolution > 0:  # a smaller crop or a larger network input needs more pixels
            wanted.append(("smallest extension", self.ext_min, augment.ext_min, "--min-extension", False))
            if input_size is not None:
                wanted.append(("input size", self.resolution, input_size, "--resolution", True))
        return [(f"{label} {value:g}", f"{label} {recorded:g}", f"{option} {value:g}")
                for label, recorded, value, option, larger in wanted
                if (value - recorded if larger else recorded - value) > _TOLERANCE]


def require_covers(manifest_dir: str | os.PathLike, augment: AugmentSpec, input_size: int | None = None,
                   manifest=None) -> None:
    """Refuse a recipe whose crops reach outside the region ``prepare`` stored around each person, or
    would be upsampled from it (a smaller extension or a larger network input than it was stored for).

    Args:
        manifest_dir: a prepared data set folder.
        augment: the recipe's crop settings (``eval_augment(extension)`` for an evaluation crop).
        input_size: the network input side S (None: resolution not checked).
        manifest: its ``shards.Manifest`` (or manifest dict) when the caller has read it already.
    Raises:
        DatasetError: naming the manifest, each setting beyond what was stored (e.g. ``rotation 30``)
            and the ``prepare`` command, with the option that fixes it (``--max-rotation 30``).
        shards.ShardError: the folder holds no readable manifest.
    """
    if manifest is None:
        manifest = shards.Manifest.read(manifest_dir)
    elif isinstance(manifest, dict):
        manifest = shards.Manifest.from_dict(manifest)
    rule = PrecropRule.from_manifest(manifest.precrop)
    missing = rule.shortfalls(augment, input_size)
    if not missing:
        return
    asked = ", ".join(s for s, _, _ in missing)
    stored = ", ".join(s for _, s, _ in missing)
    options = " ".join(o for _, _, o in missing)
    needed = PrecropRule.from_augment(augment, input_size or rule.resolution)
    wider = rule.to_dict()
    for field in ("ext_max", "shift", "rotation", "scale_jitter", "resolution"):
        wider[field] = max(getattr(rule, field), getattr(needed, field))
    wider["ext_min"] = min(rule.ext_min, needed.ext_min)
    command = shards.rebuild_command(manifest_dir, manifest.replace(precrop=wider))
    raise DatasetError(
        f"{os.path.join(manifest_dir, shards.MANIFEST)}: the recipe needs more than prepare stored around "
        f"each person ({asked}; stored for {stored}). Prepare the data set again with {options}: "
        f"`{command} --replace`, or change the setting.")


def eval_augment(*extensions: float) -> AugmentSpec:
    """The crop settings of the deterministic evaluation crops at these box extensions (one, or a sweep:
    the smallest crop must not be upsampled from the stored region, the largest must fit it), for
    ``require_covers``."""
    return AugmentSpec(ext_min=min(extensions), ext_max=max(extensions), shift=0.0, flip=False)
