"""Pictures of poses: skeletons drawn on images, and contact sheets of several images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deeppose_fast.skeleton import Skeleton

# BGR: person's right side red, left side blue, centre green.
_RIGHT, _LEFT, _CENTRE = (40, 40, 230), (230, 120, 40), (60, 200, 60)


def _side_color(name: str) -> tuple[int, int, int]:
    if name.startswith(("R ", "r_")):
        return _RIGHT
    if name.startswith(("L ", "l_")):
        return _LEFT
    return _CENTRE


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
    scale = 16  # cv2 draws with 4 fractional bits: sub-pixel positions without rounding drift
    for stick in skeleton.sticks:
        if not (ok[list(stick.a)].all() and ok[list(stick.b)].all()):
            continue
        a = joints[list(stick.a)].mean(axis=0) - 0.5  # continuous -> cv2's pixel-centre coordinates
        b = joints[list(stick.b)].mean(axis=0) - 0.5
        cv2.line(out, tuple(np.round(a * scale).astype(int)), tuple(np.round(b * scale).astype(int)),
                 _side_color(stick.name), thickness, cv2.LINE_AA, shift=4)
    for k, name in enumerate(skeleton.joint_names):
        if ok[k]:
            p = tuple(np.round((joints[k] - 0.5) * scale).astype(int))
            cv2.circle(out, p, (thickness + 1) * scale, _side_color(name), -1, cv2.LINE_AA, shift=4)
    return out


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
