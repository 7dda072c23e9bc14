"""Dot shards: synthetic people made of one coloured dot per joint, written in the shard format.

Each JPEG shows a distinct, saturated colour centred on every annotated joint (``palette(K)[k]`` for
joint ``k``) on a smooth grey background. After any crop, flip and rotation, the colour under a target
position says which joint the target belongs to, and the colour's centroid says where it really is:
``check_dots`` measures both. Used by the pipeline tests (the dot test) and by the command tests that need
a small prepared data set (``make_dot_dataset``); the package itself never imports it.

Legend: N people, K joints, S the crop side.
"""
from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

from deeppose_fast import skeleton as skeletons
from deeppose_fast.datasets import shards

BACKGROUND = (128.0, 128.0, 128.0)


def palette(k: int) -> np.ndarray:
    """(k, 3) float RGB 0-255: saturated colours with evenly spaced hues."""
    return np.array([colorsys.hsv_to_rgb(i / k, 1.0, 1.0) for i in range(k)]) * 255.0


def _joints(rng: np.random.Generator, k: int, h: int, w: int, min_sep: float, margin: float) -> np.ndarray:
    """(k, 2) random joint positions at least ``min_sep`` apart (rejection sampling)."""
    pts = np.zeros((k, 2))
    for i in range(k):
        for _ in range(1000):
            p = rng.uniform([margin, margin], [w - margin, h - margin])
            if i == 0 or np.min(np.hypot(*(pts[:i] - p).T)) >= min_sep:
                break
        pts[i] = p
    return pts


def dot_image(joints: np.ndarray, annotated: np.ndarray, h: int, w: int, radius: float,
              rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 BGR image with a dot of ``palette(K)[k]`` centred on each annotated joint ``k``
    (continuous pixel coordinates)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-40, 40, 2)
    base = 128 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)  # a gentle gradient: normalisation has work
    img = np.repeat(base[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
    colours = palette(len(joints))
    shift = 4  # cv2's sub-pixel drawing: centres in 1/16 px
    for k, (x, y) in enumerate(joints):
        if annotated[k]:
            r, g, b = colours[k]
            centre = (int(round((x - 0.5) * 16)), int(round((y - 0.5) * 16)))  # continuous -> cv2 centre
            cv2.circle(img, centre, int(round(radius * 16)), (b, g, r), -1, cv2.LINE_AA, shift=shift)
    return img


def make_dot_dataset(out_dir: str | Path, *, num_train: int, num_test: int = 0, skeleton: str = "lsp",
                     height=(200, 320), width=(220, 400), radius: float = 6.0, min_sep: float = 30.0,
                     unannotated: float = 0.0, records_per_shard: int = 1000, quality: int = 95,
                     seed: int = 0, scale_range: tuple[float, float] | None = None) -> Path:
    """Write a prepared data set folder of dot people (``manifest.json`` + tar shards).

    Args:
        num_train, num_test: people per split (a split with 0 people is left out).
        height, width: ranges of the JPEG sizes, px.
        unannotated: fraction of joints marked not annotated (not drawn, x = y = 0).
        scale_range: records declare a random scale per axis from this range, as regions stored at
            reduced resolution do (None: 1, full resolution).
    Returns the folder. ``meta`` carries a random offset (source frame = JPEG frame / scale + offset), a
    head box, ``person_index`` = key, ``image_id`` = key and the scale.
    """
    out_dir = Path(out_dir)
    skel = skeletons.get(skeleton)
    k = skel.num_joints
    rng = np.random.default_rng(seed)
    splits = {}
    key = 0
    for split, n in (("train", num_train), ("test", num_test)):
        if n <= 0:
            continue
        with shards.ShardWriter(out_dir, split, records_per_shard=records_per_shard) as writer:
            for _ in range(n):
                h, w = int(rng.integers(*height)), int(rng.integers(*width))
                xy = _joints(rng, k, h, w, min_sep, margin=radius + 2)
                ann = rng.random(k) >= unannotated
                if not ann.any():
                    ann[0] = True
                img = dot_image(xy, ann, h, w, radius, rng)
                ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if not ok:
                    raise RuntimeError("cv2.imencode failed")
                pose = np.zeros((k, 4), np.float32)
                pose[ann, :2] = xy[ann]
                pose[ann, 2:] = 1
                ox, oy = rng.uniform(0, 500, 2)
                scale = (1.0, 1.0) if scale_range is None else rng.uniform(*scale_range, 2)
                meta = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].min() + 20, xy[:, 1].min() + 20,
                                 ox, oy, key, key, *scale], np.float32)
                writer.write(key, jpeg.tobytes(), pose, meta)
                key += 1
        splits[split] = writer.summary()
    # whole images, no pre-crop: the manifest records none (precrop {}), so any recipe may read them
    shards.Manifest(name="dots", splits=splits, skeleton=skel.name, joint_names=tuple(skel.joint_names),
                    flip_pairs=tuple(skel.flip_pairs), num_joints=k, num_people=key,
                    created_by="deeppose_fast.testing.dots").write(out_dir)
    return out_dir


def check_dots(images: np.ndarray, targets: np.ndarray, weights: np.ndarray, flipped: np.ndarray,
               flip_perm, *, window: int = 7, layout: str = "NHWC") -> dict:
    """Measure, on raw (unnormalised, RGB 0-255) crops of dot people, whether each weighted target sits on
    the right joint's dot.

    On a mirrored sample, label ``k`` must sit on the dot of the joint that plays role ``k`` in the mirrored
    picture, i.e. the original joint ``flip_perm[k]`` (a mirrored left wrist looks like a right wrist);
    without the label swap it would sit on dot ``k`` and fail.

    Args:
        images: (B, S, S, 3) or (B, 3, S, S) float RGB 0-255.
        targets: (B, K, 2) in [-0.5, 0.5]; weights: (B, K).
        flipped: (B,) bool, the samples that were mirrored; flip_perm: (K,) the skeleton's permutation.
        window: half-size in px of the box around a target in which the dot's centroid is measured.
    Returns:
        ``{"n": joints checked, "label_accuracy": fraction whose pixel under the target has the joint's
        own colour, "mean_error_px": mean distance target -> dot centroid (dots not cut by the crop edge),
        "n_position": joints in that mean}``.
    """
    images = np.asarray(images, np.float32)
    if layout == "NCHW":
        images = images.transpose(0, 2, 3, 1)
    b, s = images.shape[0], images.shape[1]
    k = targets.shape[1]
    colours = np.vstack([palette(k), BACKGROUND])
    correct = n = 0
    errors = []
    for i in range(b):
        # nearest palette entry of every pixel: (S, S) labels, K = background
        d = ((images[i][:, :, None, :] - colours[None, None]) ** 2).sum(-1)
        labels = d.argmin(-1)
        for j in np.flatnonzero(weights[i] > 0):
            want = flip_perm[j] if flipped[i] else j
            p = (targets[i, j].astype(np.float64) + 0.5) * s
            c, r = int(min(max(np.floor(p[0]), 0), s - 1)), int(min(max(np.floor(p[1]), 0), s - 1))
            n += 1
            correct += labels[r, c] == want
            r0, r1, c0, c1 = r - window, r + window + 1, c - window, c + window + 1
            if r0 < 0 or c0 < 0 or r1 > s or c1 > s:
                continue  # the dot may be cut by the crop edge: its centroid would be biased
            mask = labels[r0:r1, c0:c1] == want
            if mask.sum() < 3 or mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
                continue  # no dot here (wrong label) or the dot spills out of the window
            ys, xs = np.nonzero(mask)
            centroid = np.array([xs.mean() + c0 + 0.5, ys.mean() + r0 + 0.5])
            errors.append(float(np.hypot(*(centroid - p))))
    return {"n": n, "label_accuracy": correct / max(n, 1),
            "mean_error_px": float(np.mean(errors)) if errors else float("nan"), "n_position": len(errors)}
