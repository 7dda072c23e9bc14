"""Prediction on one's own images: crop a person box (or take the whole image), run the network, decode
the joints to image pixels, write them as JSON and draw the skeleton into a PNG.

Shapes: S network input size, K joints. The crop is made as the data pipeline makes test crops: the box
is extended by ``extension`` around its centre (by default the checkpoint's test extension, since the
network learnt from boxes that tightly fit the joints, scaled by that factor), clipped to the image
(no padding), resized to S x S without keeping the aspect ratio (bilinear, continuous pixel convention),
RGB, normalised per image and channel (``(x - mean) / sqrt(var + NORM_EPSILON)``, as ``fn.normalize``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Same constant as the DALI pipeline's normalisation (kept here so prediction needs no DALI).
NORM_EPSILON = 1.0


class PredictError(ValueError):
    """Bad input to prediction (names the file and what is wrong)."""


@dataclass
class Prediction:
    image: str
    crop_box: np.ndarray  # (4,) x0, y0, w, h in image pixels
    joints: np.ndarray  # (K, 2) continuous image pixels


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 BGR; a PredictError naming the file if it is missing or not an image."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise PredictError(f"{path}: no such image file")
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise PredictError(f"{path}: not a readable image (OpenCV could not decode its {data.size} bytes)")
    return image


def crop_box_for(box, image_hw, extension: float, path: str = "image") -> np.ndarray:
    """The crop ``x0, y0, w, h`` for a person box ``x1, y1, x2, y2`` (None = the whole image): extended
    by ``extension`` about its centre, clipped to the image. Boxes outside the image are an error."""
    h, w = image_hw
    if box is None:
        return np.array([0.0, 0.0, float(w), float(h)])
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        raise PredictError(f"{path}: box {box} must be x1,y1,x2,y2 with x2 > x1 and y2 > y1")
    if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
        raise PredictError(f"{path}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {w}x{h} image")
    if extension <= 0:
        raise PredictError(f"extension must be positive, got {extension}")
    cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * extension, (y2 - y1) * extension
    x0, y0 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
    x3, y3 = min(float(w), cx + bw / 2), min(float(h), cy + bh / 2)
    return np.array([x0, y0, x3 - x0, y3 - y0])


def make_crop(image_bgr: np.ndarray, crop_box: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) float32 normalised RGB network input for the region ``crop_box`` (x0, y0, w, h)."""
    import cv2

    x0, y0, w, h = (float(v) for v in crop_box)
    sx, sy = size / w, size / h
    # Continuous pixels p_c = p_cv + 0.5: dst_c = s * (src_c - x0)  =>  dst_cv = s*src_cv + s*0.5 - s*x0 - 0.5
    m = np.array([[sx, 0.0, sx * 0.5 - sx * x0 - 0.5], [0.0, sy, sy * 0.5 - sy * y0 - 0.5]])
    crop = cv2.warpAffine(image_bgr.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    crop = crop[:, :, ::-1]  # BGR -> RGB, as the pipeline decodes
    mean = crop.mean(axis=(0, 1), keepdims=True)
    var = crop.var(axis=(0, 1), keepdims=True)
    return ((crop - mean) / np.sqrt(var + NORM_EPSILON)).astype(np.float32)


def predict_images(model, images, *, boxes=None, extension: float = 2.0, batch_size: int = 32) -> list[Prediction]:
    """Joints for each image path (with an optional person box each, None = whole image)."""
    from deeppose_fast import codec

    size = int(model.input_shape[1])
    boxes = boxes if boxes is not None else [None] * len(images)
    if len(boxes) != len(images):
        raise PredictError(f"{len(boxes)} boxes for {len(images)} images")
    crops, infos = [], []
    for path, box in zip(images, boxes):
        img = read_image(path)
        cb = crop_box_for(box, img.shape[:2], extension if box is not None else 1.0, str(path))
        crops.append(make_crop(img, cb, size))
        infos.append((str(path), cb))
    out = []
    for i in range(0, len(crops), batch_size):
        t = model(np.stack(crops[i:i + batch_size]), training=False).numpy().reshape(len(crops[i:i + batch_size]), -1, 2)
        for (path, cb), ti in zip(infos[i:i + batch_size], t):
            out.append(Prediction(path, cb, codec.decode(ti, cb)))
    return out


def write_outputs(pred: Prediction, skeleton_name: str, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``<stem>.joints.json`` and ``<stem>.pose.png`` (skeleton drawn) in ``out_dir``."""
    from deeppose_fast import skeleton as skeletons
    from deeppose_fast import viz

    sk = skeletons.get(skeleton_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(pred.image).stem
    doc = {"image": pred.image, "skeleton": sk.name, "crop_box_xywh": [float(v) for v in pred.crop_box],
           "pixel_convention": "continuous (pixel i covers [i, i+1))",
           "joints": [{"name": n, "x": float(x), "y": float(y)} for n, (x, y) in zip(sk.joint_names, pred.joints)]}
    json_path = out_dir / f"{stem}.joints.json"
    json_path.write_text(json.dumps(doc, indent=2))
    img = read_image(pred.image)
    drawn = viz.draw_skeleton(img, pred.joints, sk, thickness=max(2, round(min(img.shape[:2]) / 150)))
    png_path = viz.write_png(out_dir / f"{stem}.pose.png", drawn)
    return json_path, png_path
