"""The crop geometry of DeepPose training and evaluation, in NumPy: the reference that the native DALI
operator (``csrc/pose_crop``) reproduces, and the codec between crop-frame targets and image pixels.

Legend: K joints, S the output side (``input_size``), N samples. All coordinates are continuous pixel
coordinates (pixel ``i`` covers ``[i, i+1)``, centre ``i + 0.5``; see docs/ARCHITECTURE.md).

One sample's geometry, from its joints (JPEG frame), the JPEG's size and seven random draws
(``DRAW_FIELDS``):

1. box: the tight box around the annotated joints (the whole image when none is annotated); a side
   shorter than ``MIN_ASPECT`` times the other side (or than ``MIN_SIDE`` px) is widened to it about its
   centre, so that a degenerate box (one joint, joints on a line) still gives a finite crop;
2. extension: width times ``ext_x`` and height times ``ext_y`` about the box centre;
3. shift: the centre moves by ``shift_x * min(shift * crop_w, (crop_w - box_w) / 2)`` (and likewise in
   y), i.e. up to ``shift`` of the crop size but never so far that an annotated joint leaves the crop;
4. clip to the image (no padding), keeping at least 1 px inside it: the crop box ``x0, y0, w, h``;
5. the src->dst matrix maps the crop box onto ``[0, S] x [0, S]`` (anisotropic), then, if ``flip``,
   ``x -> S - x``, then rotates by ``angle`` degrees and scales by ``scale`` about the crop centre
   ``(S/2, S/2)`` (with the y axis pointing down, a positive angle turns the picture clockwise);
6. the region to decode: the integer pixel box covering the source footprint of the output square plus a
   1 px margin for bilinear interpolation, clipped to the image; the returned matrix takes coordinates
   relative to the region's corner (the decoded slice), so ``warp_affine(slice, matrix)`` makes the crop;
   this region and matrix are in the stored JPEG's pixels, which may be a scaled copy of the source;
7. targets ``t = p_dst / S - 0.5`` (clipped to [-0.5, 0.5]) and weights 1 for annotated joints inside
   ``[0, S]^2`` (0 otherwise, and then the target is 0); on a flipped sample, targets and weights are
   permuted by the skeleton's flip permutation: label ``k`` then names the joint that plays role ``k`` in
   the mirrored picture (a mirrored left wrist looks like a right wrist).

Stored resolution: a shard may store a person's region scaled by ``scale = (s_x, s_y)`` JPEG pixels per
source pixel (``prepare`` stores regions at the resolution the network needs). The geometry is then
computed in the *source* frame (the JPEG's joints and size divided by ``scale``), so the crop box, the
targets and the weights are those of the unscaled image; only the region to decode and the matrix
(step 6) are expressed in the stored JPEG's pixels: ``matrix = M_source @ diag(1 / s_x, 1 / s_y)``.
``scale = (1, 1)`` (the default) is the plain case above, operation for operation.

Evaluation uses ``eval_draws(extension)``: no shift, flip, rotation or scale, so the matrix is a pure
anisotropic scale and ``decode(targets, crop_box)`` maps outputs back to pixels exactly.

Cascade stages (``joint_crop_geometry``; Toshev & Szegedy 2014, section 3.2): stage s >= 2 refines joint
``i`` from a square crop centred on its current estimate, of side ``sigma * diam`` (``diam``:
``Skeleton.torso_diameter`` of the current estimate). From a centre ``(c_x, c_y)`` and a side ``L`` (source
frame), a flip and the joint index ``i``:

1.-4. the crop box is the square ``[c_x - L/2, c_x + L/2] x [c_y - L/2, c_y + L/2]``, *not* clipped to the
   image: where it leaves the image the warp repeats the border pixels;
5. the matrix maps it onto ``[0, S]^2``, then ``x -> S - x`` if flipped (no rotation, no zoom);
6. the region to decode is step 6 above for this box: its footprint plus the margin, in the stored JPEG's
   pixels, clipped to the JPEG (at least 1 px: a box wholly outside it decodes the border pixel);
7. targets as in step 7 (every annotated joint inside ``[0, S]^2`` has its target, the others 0), but
   weight 1 only for joint ``i`` (when annotated and inside), 0 for every other joint: output pair ``i``
   is trained on joint ``i``'s crop. On a flipped sample targets and weights are permuted as in step 7,
   so the weight lands on the label ``k`` with ``flip_perm[k] = i`` (``flip_perm[i]`` for a skeleton's
   left/right swap): the label that plays ``i``'s role in the mirrored picture.

The ``scale`` of a stored region is handled as above: the centre, side and crop box are in the source
frame, the region and matrix in the JPEG's pixels. The native ``JointCrop`` operator takes these as five
draws per sample (``JOINT_DRAW_FIELDS``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from deeppose_fast.specs import AugmentSpec

DRAW_FIELDS = ("ext_x", "ext_y", "shift_x", "shift_y", "flip", "angle", "scale")
NUM_DRAWS = len(DRAW_FIELDS)
JOINT_DRAW_FIELDS = ("centre_x", "centre_y", "side", "flip", "joint")  # JointCrop's draws, source frame
MIN_ASPECT = 0.25  # a box side is at least this fraction of the other side
MIN_SIDE = 1.0  # px
REGION_MARGIN = 1  # px around the footprint: bilinear sampling reads one neighbour beyond it
BORDER_EPS = 1e-3  # px: a joint this close outside the output square still counts as inside


class Geometry(NamedTuple):
    """One sample's crop geometry (float32 arrays, like the operator's outputs).

    Attributes:
        matrix: (2, 3) src->dst affine matrix, src relative to the region's corner.
        anchor: (2,) region corner ``x, y`` (integral values), JPEG frame.
        shape: (2,) region size ``w, h`` (integral values).
        targets: (K, 2) in [-0.5, 0.5] for the annotated joints inside the output square, else 0.
        weights: (K,) 1.0 or 0.0: ``crop_geometry``: 1 exactly where there is a target;
            ``joint_crop_geometry``: 1 at most for the refined joint's label.
        crop_box: (4,) ``x0, y0, w, h`` of the (unrotated) crop box, source frame (the JPEG's frame
            divided by ``scale``: the JPEG frame itself at scale 1).
    """

    matrix: np.ndarray
    anchor: np.ndarray
    shape: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    crop_box: np.ndarray


def eval_draws(extension: float) -> np.ndarray:
    """(7,) float32 draws of the deterministic evaluation crop at a box extension."""
    return np.array([extension, extension, 0.0, 0.0, 0.0, 0.0, 1.0], np.float32)


def sample_draws(rng: np.random.Generator, n: int, augment: AugmentSpec = AugmentSpec()) -> np.ndarray:
    """(n, 7) float32 random draws of ``n`` training crops under ``augment`` (the DALI pipeline draws the
    same laws; ``DRAW_FIELDS`` names the columns).

    ``ext_x, ext_y ~ U[ext_min, ext_max]``, ``shift_x, shift_y ~ U[-1, 1]`` (0 when ``shift`` is 0, as
    DALI's), ``flip ~ Bernoulli(0.5)`` (0 when ``flip`` is False), ``angle ~ U[-rotation, rotation]``
    degrees, ``scale ~ U[1 - j, 1 + j]`` with ``j = scale_jitter``.
    """
    a = augment
    d = np.empty((n, NUM_DRAWS), np.float32)
    d[:, 0:2] = rng.uniform(a.ext_min, a.ext_max, (n, 2))
    d[:, 2:4] = rng.uniform(-1.0, 1.0, (n, 2)) if a.shift else 0.0
    d[:, 4] = (rng.random(n) < 0.5) if a.flip else 0.0
    d[:, 5] = rng.uniform(-a.rotation, a.rotation, n) if a.rotation else 0.0
    d[:, 6] = rng.uniform(1.0 - a.scale_jitter, 1.0 + a.scale_jitter, n) if a.scale_jitter else 1.0
    return d


def _grown_box(x0: float, x1: float, y0: float, y1: float) -> tuple[float, float, float, float]:
    """``(cx, cy, w, h)`` of the box ``[x0, x1] x [y0, y1]`` with each side widened about the centre to at
    least ``MIN_ASPECT`` times the other side and ``MIN_SIDE`` px."""
    w0, h0 = x1 - x0, y1 - y0
    return (0.5 * (x0 + x1), 0.5 * (y0 + y1),
            max(w0, MIN_ASPECT * h0, MIN_SIDE), max(h0, MIN_ASPECT * w0, MIN_SIDE))


def joint_box(joints: np.ndarray) -> tuple[float, float, float, float]:
    """The person box of step 1 (module docstring), shared by the crop and the pre-crop of ``prepare``.

    Args:
        joints: (M, 2) pixels of the annotated joints (M >= 1, all finite).
    Returns:
        ``(cx, cy, w, h)`` float: the tight box's centre and its sides, degenerate sides widened.
    """
    xs = np.asarray(joints[:, 0], np.float64)
    ys = np.asarray(joints[:, 1], np.float64)
    return _grown_box(float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))


def _clip_span(lo: float, hi: float, limit: float) -> tuple[float, float]:
    """Clip ``[lo, hi]`` to ``[0, limit]`` keeping at least 1 px (limit >= 1)."""
    lo = min(max(lo, 0.0), limit)
    hi = min(max(hi, 0.0), limit)
    if hi - lo < 1.0:
        lo = min(lo, limit - 1.0)
        hi = lo + 1.0
    return lo, hi


def _checked_frame(pose, image_hw, scale, size) -> tuple[np.ndarray, int, int, float, float, float]:
    """The checks common to both crops: ``(pose float32 (K, 4), H, W, s_x, s_y, S)``."""
    pose = np.asarray(pose, np.float32)
    # float32 like the operator's input, then double
    s_x, s_y = (1.0, 1.0) if scale is None else (float(v) for v in np.asarray(scale, np.float32))
    if pose.ndim != 2 or pose.shape[1] != 4:
        raise ValueError(f"pose must have shape (K, 4), got {pose.shape}")
    H, W = int(image_hw[0]), int(image_hw[1])
    if H < 1 or W < 1:
        raise ValueError(f"image must be at least 1 x 1 px, got {H} x {W}")
    if not (0.0 < s_x <= W and 0.0 < s_y <= H):  # NaN fails too; the source frame is >= 1 px
        raise ValueError(f"scale must be in (0, W] x (0, H] for a {W} x {H} image, got ({s_x}, {s_y})")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return pose, H, W, s_x, s_y, float(size)


def _checked_perm(flipped: bool, flip_perm, K: int) -> np.ndarray | None:
    """(K,) int64 flip permutation of a flipped sample, None for an unflipped one."""
    if not flipped:
        return None
    if flip_perm is None or len(flip_perm) != K:
        raise ValueError(f"a flipped sample needs flip_perm of length {K}")
    return np.asarray(flip_perm, np.int64)


def _box_geometry(pose: np.ndarray, W: int, H: int, s_x: float, s_y: float, S: float,
                  box: tuple[float, float, float, float], perm: np.ndarray | None, angle: float, zoom: float,
                  weighted: np.ndarray) -> Geometry:
    """Steps 5-7 of the module docstring for a crop box, shared by ``crop_geometry`` and
    ``joint_crop_geometry`` (``csrc/pose_crop``'s ``BoxGeometry`` mirrors it).

    Args:
        pose: (K, 4) float32, JPEG frame; W, H: the JPEG's size; s_x, s_y: its scale; S: the output side.
        box: ``x0, x1, y0, y1`` of the crop box, source frame (float64 values).
        perm: (K,) flip permutation of a flipped sample, None when not flipped.
        angle, zoom: rotation (degrees) and scale about the output's centre.
        weighted: (K,) bool, the joints that may carry weight (before the flip's relabelling).
    """
    x0, x1, y0, y1 = box
    cw, ch = x1 - x0, y1 - y0
    px = pose[:, 0].astype(np.float64) / s_x  # the source frame
    py = pose[:, 1].astype(np.float64) / s_y
    valid = pose[:, 2] > 0.5

    # 5. full-frame src->dst: p' = R s (F (A p) - c) + c, written out as a 2x3 matrix
    sx, sy = S / cw, S / ch
    a00, a02 = sx, -x0 * sx  # A: crop box -> [0, S]^2
    a11, a12 = sy, -y0 * sy
    if perm is not None:  # F: x -> S - x
        a00, a02 = -a00, S - a02
    rad = math.radians(angle)
    c, s = math.cos(rad) * zoom, math.sin(rad) * zoom
    h = 0.5 * S
    # rows of R s (q - (h, h)) + (h, h), q = (a00 x + a02, a11 y + a12)
    m = np.array([[c * a00, -s * a11, c * (a02 - h) - s * (a12 - h) + h],
                  [s * a00, c * a11, s * (a02 - h) + c * (a12 - h) + h]], np.float64)

    # 6. region: the footprint is the crop box itself, or with rotation/scale the bounding box of the
    # output square's corners mapped back (scalar arithmetic, in the operator's order, so both agree)
    if angle == 0.0 and zoom == 1.0:
        fx0, fx1, fy0, fy1 = x0, x1, y0, y1
    else:
        m00, m01, m02, m10, m11, m12 = (float(v) for v in m.ravel())
        det = m00 * m11 - m01 * m10
        fx0 = fy0 = math.inf
        fx1 = fy1 = -math.inf
        for u, v in ((0.0, 0.0), (S, 0.0), (0.0, S), (S, S)):
            qx, qy = u - m02, v - m12
            ux = (m11 * qx - m01 * qy) / det
            uy = (m00 * qy - m10 * qx) / det
            fx0, fx1, fy0, fy1 = min(fx0, ux), max(fx1, ux), min(fy0, uy), max(fy1, uy)
    # ... in the stored JPEG's pixels, clipped to the JPEG (a footprint beyond it: the 1 px at its border)
    fx0, fx1, fy0, fy1 = fx0 * s_x, fx1 * s_x, fy0 * s_y, fy1 * s_y
    rx0 = min(max(math.floor(fx0) - REGION_MARGIN, 0), W - 1)
    ry0 = min(max(math.floor(fy0) - REGION_MARGIN, 0), H - 1)
    rx1 = max(min(math.ceil(fx1) + REGION_MARGIN, W), rx0 + 1)
    ry1 = max(min(math.ceil(fy1) + REGION_MARGIN, H), ry0 + 1)
    m_region = m.copy()
    m_region[:, 0] = m[:, 0] / s_x
    m_region[:, 1] = m[:, 1] / s_y
    m_region[:, 2] = m_region[:, 0] * rx0 + m_region[:, 1] * ry0 + m[:, 2]

    # 7. targets and weights
    dx = m[0, 0] * px + m[0, 1] * py + m[0, 2]
    dy = m[1, 0] * px + m[1, 1] * py + m[1, 2]
    inside = (valid & (dx >= -BORDER_EPS) & (dx <= S + BORDER_EPS)
              & (dy >= -BORDER_EPS) & (dy <= S + BORDER_EPS))
    # clipped: a joint up to BORDER_EPS outside still yields a target inside [-0.5, 0.5]
    t = np.clip(np.stack([dx / S - 0.5, dy / S - 0.5], axis=1), -0.5, 0.5)
    targets = np.where(inside[:, None], t, 0.0)
    weights = (inside & weighted).astype(np.float64)
    if perm is not None:
        targets, weights = targets[perm], weights[perm]
    return Geometry(
        matrix=m_region.astype(np.float32),
        anchor=np.array([rx0, ry0], np.float32),
        shape=np.array([rx1 - rx0, ry1 - ry0], np.float32),
        targets=targets.astype(np.float32),
        weights=weights.astype(np.float32),
        crop_box=np.array([x0, y0, cw, ch], np.float32),
    )


def crop_geometry(pose: np.ndarray, image_hw, draws: np.ndarray, *, size: int, shift: float = 0.1,
                  flip_perm=None, scale=None) -> Geometry:
    """The geometry of one sample (the module docstring states the rule).

    Args:
        pose: (K, 4) ``x, y, annotated, visible`` in the JPEG's continuous pixel frame.
        image_hw: ``(H, W)`` (or ``(H, W, C)``) of the decoded JPEG.
        draws: (7,) see ``DRAW_FIELDS``.
        size: S, the output side in pixels.
        shift: the largest shift as a fraction of the crop size.
        flip_perm: (K,) int, ``flipped = joints[flip_perm]``; required when ``draws[4]`` is set.
        scale: (2,) ``s_x, s_y`` JPEG pixels per source pixel of a scaled region (None: 1, 1).
    Returns:
        a ``Geometry`` of float32 arrays.
    """
    draws = np.asarray(draws, np.float32)
    if draws.shape != (NUM_DRAWS,):
        raise ValueError(f"draws must have shape ({NUM_DRAWS},), got {draws.shape}")
    pose, H, W, s_x, s_y, S = _checked_frame(pose, image_hw, scale, size)
    K = pose.shape[0]
    ext_x, ext_y, sh_x, sh_y, flip_d, angle, zoom = (float(v) for v in draws)
    perm = _checked_perm(flip_d > 0.5, flip_perm, K)

    # 0. the source frame (float64 throughout, in the operator's order of operations)
    src_w, src_h = W / s_x, H / s_y
    px = pose[:, 0].astype(np.float64) / s_x
    py = pose[:, 1].astype(np.float64) / s_y
    # 1. box around the annotated joints
    valid = pose[:, 2] > 0.5
    if valid.any():
        cx, cy, bw, bh = joint_box(np.stack([px[valid], py[valid]], axis=1))
    else:
        cx, cy, bw, bh = _grown_box(0.0, src_w, 0.0, src_h)
    # 2. extension, 3. bounded shift
    cw, ch = bw * ext_x, bh * ext_y
    cx += sh_x * max(min(shift * cw, 0.5 * (cw - bw)), 0.0)
    cy += sh_y * max(min(shift * ch, 0.5 * (ch - bh)), 0.0)
    # 4. clip
    x0, x1 = _clip_span(cx - 0.5 * cw, cx + 0.5 * cw, src_w)
    y0, y1 = _clip_span(cy - 0.5 * ch, cy + 0.5 * ch, src_h)
    # 5.-7.: every joint may carry weight
    return _box_geometry(pose, W, H, s_x, s_y, S, (x0, x1, y0, y1), perm, angle, zoom, np.ones(K, bool))


def joint_crop_geometry(pose: np.ndarray, image_hw, centre, side: float, joint: int, *, size: int,
                        flip: bool = False, flip_perm=None, scale=None) -> Geometry:
    """The geometry of a cascade stage's crop of one joint (the module docstring states the rule).

    Args:
        pose: (K, 4) ``x, y, annotated, visible`` in the JPEG's continuous pixel frame (the ground truth).
        image_hw: ``(H, W)`` (or ``(H, W, C)``) of the decoded JPEG.
        centre: (2,) ``x, y`` of the crop's centre, source frame (the current estimate of the joint).
        side: the crop's side, source pixels (``sigma * diam(y)``), finite and > 0.
        joint: the index (0 <= joint < K) of the joint refined: the only one whose label carries weight.
        size: S, the output side in pixels.
        flip: mirror the crop (x -> S - x) and relabel left and right with ``flip_perm``.
        flip_perm: (K,) int, ``flipped = joints[flip_perm]``; required when ``flip``.
        scale: (2,) ``s_x, s_y`` JPEG pixels per source pixel of a scaled region (None: 1, 1).
    Returns:
        a ``Geometry`` of float32 arrays; ``crop_box`` is the square, whether or not it leaves the image.
    """
    pose, H, W, s_x, s_y, S = _checked_frame(pose, image_hw, scale, size)
    K = pose.shape[0]
    # float32 like the operator's draws, then double
    cx, cy = (float(v) for v in np.asarray(centre, np.float32).reshape(2))
    side = float(np.float32(side))
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"centre must be finite, got ({cx}, {cy})")
    if not (0.0 < side < math.inf):
        raise ValueError(f"side must be finite and > 0, got {side}")
    if isinstance(joint, (float, np.floating)) or not 0 <= int(joint) < K:
        raise ValueError(f"joint must be an integer in [0, {K}), got {joint}")
    perm = _checked_perm(bool(flip), flip_perm, K)
    # the square about the centre, not clipped: the warp repeats the border beyond the image
    box = (cx - 0.5 * side, cx + 0.5 * side, cy - 0.5 * side, cy + 0.5 * side)
    return _box_geometry(pose, W, H, s_x, s_y, S, box, perm, 0.0, 1.0, np.arange(K) == int(joint))


def full_frame_matrix(geometry: Geometry) -> np.ndarray:
    """(2, 3) src->dst matrix taking JPEG-frame coordinates (undoes the region offset)."""
    m = geometry.matrix.astype(np.float64)
    out = m.copy()
    out[:, 2] = m[:, 2] - m[:, :2] @ geometry.anchor.astype(np.float64)
    return out


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points mapped by a (2, 3) affine matrix."""
    p = np.asarray(points, np.float64)
    m = np.asarray(matrix, np.float64)
    return p @ m[:, :2].T + m[:, 2]


def encode(joints: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """Targets of joints under an unrotated, unflipped crop: ``(p - xy) / wh - 0.5``.

    Args:
        joints: (..., K, 2) pixels; crop_box: (..., 4) ``x0, y0, w, h`` in the same frame.
    Returns:
        (..., K, 2) float64 targets (outside [-0.5, 0.5] for joints outside the crop).
    """
    joints = np.asarray(joints, np.float64)
    box = np.asarray(crop_box, np.float64)[..., None, :]
    return (joints - box[..., :2]) / box[..., 2:] - 0.5


def decode(targets: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """Pixels of crop-frame targets: ``p = xy + (t + 0.5) * wh`` (the inverse of ``encode``).

    Args:
        targets: (..., K, 2) network outputs or targets; crop_box: (..., 4) ``x0, y0, w, h``.
    Returns:
        (..., K, 2) float64 pixels in the crop box's frame (source-image pixels for ``eval_batches``).
    """
    targets = np.asarray(targets, np.float64)
    box = np.asarray(crop_box, np.float64)
    if box.shape[-1] != 4:
        raise ValueError(f"crop_box must end in 4 (x0, y0, w, h), got shape {box.shape}")
    box = box[..., None, :]
    return box[..., :2] + (targets + 0.5) * box[..., 2:]
