"""Pictures of poses: skeletons drawn on images, and contact sheets of several images.

A skeleton is drawn whole (``connections``): the data set's ten PCP sticks plus the links that join them
into one figure, the shoulders line, the hips line and the neck to the torso, so no limb floats apart.
Colours (BGR) say the person's side: right red, left blue, centre green; ``draw_pose`` adds the person and
crop boxes and, below the picture, a legend of these colours.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deeppose_fast.skeleton import Skeleton, Stick

# BGR: person's right side red, left side blue, centre green; the crop box yellow, a given person box magenta.
_RIGHT, _LEFT, _CENTRE = (40, 40, 230), (230, 120, 40), (60, 200, 60)
CROP_COLOUR, BOX_COLOUR = (0, 220, 255), (220, 60, 220)


def _side_color(name: str) -> tuple[int, int, int]:
    if name.startswith(("R ", "r_")):
        return _RIGHT
    if name.startswith(("L ", "l_")):
        return _LEFT
    return _CENTRE


def connections(skeleton: Skeleton) -> tuple[Stick, ...]:
    """Every segment of the drawn figure: ``skeleton.sticks`` plus the shoulders line, the hips line, the
    neck to the torso's top end, and, where the torso runs between joints of its own (MPII's thorax and
    pelvis), those joints to the middles of the shoulders and hips lines. Found by joint name, so any layout
    with ``r_/l_shoulder``, ``r_/l_hip`` and a ``torso`` stick gets them."""
    j = {name: k for k, name in enumerate(skeleton.joint_names)}
    shoulders, hips = (j["r_shoulder"], j["l_shoulder"]), (j["r_hip"], j["l_hip"])
    torso = next(s for s in skeleton.sticks if s.name == "torso")
    links = [Stick("shoulders", shoulders[:1], shoulders[1:]), Stick("hips", hips[:1], hips[1:]),
             Stick("neck", (skeleton.neck,), torso.a)]
    for end, line, name in ((torso.a, shoulders, "upper torso"), (torso.b, hips, "lower torso")):
        if set(end) != set(line):
            links.append(Stick(name, end, line))
    return tuple(skeleton.sticks) + tuple(links)


def _cv_point(p) -> tuple[int, int]:
    """A continuous-pixel point as cv2's fixed-point (``shift=4``) pixel-centre coordinates."""
    return tuple(np.round((np.asarray(p, np.float64) - 0.5) * 16).astype(int))


def draw_skeleton(image: np.ndarray, joints: np.ndarray, skeleton: Skeleton,
                  valid: np.ndarray | None = None, thickness: int = 2) -> np.ndarray:
    """Draw a skeleton on a copy of an image.

    Args:
        image: (H, W, 3) uint8 BGR image.
        joints: (K, 2) continuous pixel coordinates (pixel centres at i + 0.5); NaN joints are skipped.
        skeleton: the joint layout.
        valid: optional (K,) bool; False joints are skipped.
    Returns:
        (H, W, 3) uint8 BGR image with sticks and joints drawn.
    """
    out = np.ascontiguousarray(image.copy())
    joints = np.asarray(joints, dtype=np.float64)
    ok = np.isfinite(joints).all(axis=1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    # cv2 draws with 4 fractional bits (shift=4): sub-pixel positions without rounding drift
    for stick in connections(skeleton):
        if not (ok[list(stick.a)].all() and ok[list(stick.b)].all()):
            continue
        a, b = joints[list(stick.a)].mean(axis=0), joints[list(stick.b)].mean(axis=0)
        cv2.line(out, _cv_point(a), _cv_point(b), _side_color(stick.name), thickness, cv2.LINE_AA, shift=4)
    for k, name in enumerate(skeleton.joint_names):
        if ok[k]:
            cv2.circle(out, _cv_point(joints[k]), (thickness + 1) * 16, _side_color(name), -1, cv2.LINE_AA,
                       shift=4)
    return out


def draw_box(image: np.ndarray, box_xywh, colour, thickness: int) -> None:
    """Outline ``x0, y0, w, h`` (continuous pixels) in place, along the box's outermost pixels inside."""
    x0, y0, w, h = (float(v) for v in box_xywh)
    # the outermost pixels inside [x0, x0 + w) have centres x0 + 0.5 and x0 + w - 0.5
    cv2.rectangle(image, _cv_point((x0 + 0.5, y0 + 0.5)), _cv_point((x0 + w - 0.5, y0 + h - 0.5)), colour,
                  thickness, cv2.LINE_AA, shift=4)


def legend_strip(width: int, entries: list[tuple[str, tuple[int, int, int]]], scale: float) -> np.ndarray:
    """(h, width, 3) uint8 white strip keying colours to labels (swatch, label, ...), wrapped into rows.

    Drawn below the picture rather than over it, so that it never hides the person, even in a small image.
    """
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(scale * 1.5))
    (_, th), _ = cv2.getTextSize("Ag", font, scale, thick)
    pad, row, swatch = th // 2 + 2, int(th * 2), 2 * th
    places, x, y = [], pad, 0  # (x, row index) of each entry, left to right, wrapping
    for text, _ in entries:
        w = swatch + pad + cv2.getTextSize(text, font, scale, thick)[0][0] + 2 * pad
        if x > pad and x + w > width:
            x, y = pad, y + 1
        places.append((x, y))
        x += w
    strip = np.full((row * (places[-1][1] + 1) + pad, width, 3), 255, np.uint8)
    for (text, colour), (x, r) in zip(entries, places):
        mid = pad + r * row + row // 2
        cv2.line(strip, (x, mid), (x + swatch, mid), colour, max(2, th // 2), cv2.LINE_AA)
        cv2.putText(strip, text, (x + swatch + pad, mid + th // 2), font, scale, (20, 20, 20), thick, cv2.LINE_AA)
    return strip


def draw_pose(image: np.ndarray, joints: np.ndarray, skeleton: Skeleton, *, crop_box=None, box=None,
              thickness: int | None = None) -> np.ndarray:
    """A prediction picture: the whole skeleton, the crop box (the region the network saw) and the person box
    given (if any) on a copy of the image, with a legend of the colours in a strip below it (so the result
    is taller than ``image``; its pixels above the strip keep the image's coordinates).

    Args:
        image: (H, W, 3) uint8 BGR.
        joints: (K, 2) continuous pixels (NaN = not drawn).
        skeleton: the joint layout.
        crop_box: optional (4,) ``x0, y0, w, h``; box: optional (4,) person box ``x1, y1, x2, y2``.
        thickness: line width in pixels (default: scaled to the image, at least 2).
    """
    side = min(image.shape[:2])
    thickness = thickness or max(2, round(side / 150))
    out = np.ascontiguousarray(image.copy())
    entries = [("right", _RIGHT), ("left", _LEFT), ("centre", _CENTRE)]
    if crop_box is not None:
        draw_box(out, crop_box, CROP_COLOUR, max(2, thickness // 2))
        entries.append(("crop", CROP_COLOUR))
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        draw_box(out, (x1, y1, x2 - x1, y2 - y1), BOX_COLOUR, max(2, thickness // 2))
        entries.append(("box", BOX_COLOUR))
    out = draw_skeleton(out, joints, skeleton, thickness=thickness)
    return np.concatenate([out, legend_strip(out.shape[1], entries, scale=max(0.4, side / 900))])


def contact_sheet(images: list[np.ndarray], columns: int = 8, pad: int = 2) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 images into one (rows*H', columns*W', 3) image."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = img
    return sheet


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a BGR uint8 image as PNG, creating parent folders; raises with the path if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write PNG {path}")
    return path
