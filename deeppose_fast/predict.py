"""Prediction on one's own images: crop a person box (or take the whole image), run the network, decode
the joints to image pixels, write them as JSON and draw the skeleton into a PNG. ``predict_files`` is the
whole ``predict`` command; the steps are public for tests and other callers.

Shapes: S network input size, K joints. The crop is made as the data pipeline makes test crops: the box
is extended by ``extension`` around its centre (by default the checkpoint's test extension, since the
network learnt from boxes that tightly fit the joints, scaled by that factor), clipped to the image
(no padding), resized to S x S without keeping the aspect ratio (bilinear, continuous pixel convention),
RGB, normalised per image and channel as every network input is (``pipeline.contract.normalize``).
A box may cross the image border (detector boxes often do): only the crop window is clipped, by the
evaluation crop's own rule (``codec.crop_geometry``). A box with no overlap with the image is an error; one
whose overlap is under ``MIN_OVERLAP`` px wide or high gets a ``PredictWarning``.

Outputs are named by ``output_names``: the image's stem, made unique within one call (see there).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from deeppose_fast import checkpoint, codec, viz
from deeppose_fast import model as model_lib
from deeppose_fast.cascade import links
from deeppose_fast import skeleton as skeletons
from deeppose_fast.pipeline.contract import normalize
from deeppose_fast.specs import AugmentSpec

MIN_OVERLAP = 2.0  # px: a person box overlapping the image less than this (width or height) is suspect


class PredictError(ValueError):
    """Bad input to prediction (names the file and what is wrong)."""


class PredictWarning(UserWarning):
    """A prediction that runs but is likely meaningless (names the file and why)."""


@dataclass
class Prediction:
    image: str
    crop_box: np.ndarray  # (4,) x0, y0, w, h in image pixels
    joints: np.ndarray  # (K, 2) continuous image pixels
    box: tuple[float, float, float, float] | None = None  # the person box x1, y1, x2, y2 given, if any
    stages: list = field(default_factory=list)  # a cascade: (K, 2) joints after each stage, stage 1 first

    def __post_init__(self):
        if not self.stages:
            self.stages = [self.joints]


def check_image_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path; a PredictError naming it if it is missing or a folder (cheap: reads nothing)."""
    path = Path(path)
    if path.is_dir():
        raise PredictError(f"{path}: is a folder; give image files (e.g. {path / '*.jpg'})")
    if not path.is_file():
        raise PredictError(f"{path}: no such image file")
    return path


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and prove a file can be written in it; a PredictError naming it if not
    (run before the network, so a bad ``--out`` costs nothing)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except FileExistsError:
        raise PredictError(f"{out_dir}: is a file; the output folder must be a folder") from None
    except OSError as e:
        raise PredictError(f"{out_dir}: cannot write outputs there ({e.strerror})") from None
    return out_dir


def output_names(images) -> list[str]:
    """One output name per image path, unique within the call (compared ignoring case) and stable.

    The name is the image's stem (``a/person.jpg`` -> ``person``); where stems collide, the file name
    (``person.jpg``, ``person.png``); where file names collide too, the file name prefixed with as many of
    its (resolved) parent folders as needed, joined by ``__`` (``a__person.jpg``, ``b__person.jpg``). The
    same file given twice gets ``-2``, ``-3``... in the order given.
    """
    resolved = [Path(p).resolve() for p in images]
    distinct = list(dict.fromkeys(resolved))
    parts = [p.parts[1:] for p in distinct]  # without the root, which is no name

    def label(i: int, level: int) -> str:
        return Path(parts[i][-1]).stem if level == 0 else "__".join(parts[i][-level:])

    chosen: list[str | None] = [None] * len(parts)
    depth = max((len(p) for p in parts), default=0)
    for level in range(depth + 1):
        counts = Counter(label(i, level).casefold() for i in range(len(parts)))
        for i, name in enumerate(chosen):
            if name is None and (counts[label(i, level).casefold()] == 1 or level == depth):
                chosen[i] = label(i, level)
    by_path = dict(zip(distinct, chosen))
    names = [by_path[p] for p in resolved]
    taken: set[str] = set()
    for i, name in enumerate(names):  # the same path twice (or a freak clash between levels)
        unique, n = name, 1
        while unique.casefold() in taken:
            n += 1
            unique = f"{name}-{n}"
        taken.add(unique.casefold())
        names[i] = unique
    return names


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 BGR; a PredictError naming the file if it is missing, a folder or not an image."""
    path = check_image_path(path)
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise PredictError(f"{path}: not a readable image (OpenCV could not decode its {data.size} bytes)")
    return image


def crop_box_for(box, image_hw, extension: float, path: str = "image") -> np.ndarray:
    """The crop ``x0, y0, w, h`` for a person box ``x1, y1, x2, y2`` (None = the whole image).

    As the evaluation crop (``codec.crop_geometry`` with ``codec.eval_draws``) makes it from the joints' box:
    extended by ``extension`` about the box's centre, then clipped to the image. The box may cross the image
    border; one with no overlap is a PredictError, one overlapping it by under ``MIN_OVERLAP`` px (width or
    height) a PredictWarning.
    """
    h, w = image_hw[:2]
    if box is None:
        return np.array([0.0, 0.0, float(w), float(h)])
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(np.isfinite([x1, y1, x2, y2])) or x2 <= x1 or y2 <= y1:
        raise PredictError(f"{path}: box {box} must be x1,y1,x2,y2 with x2 > x1 and y2 > y1")
    if extension <= 0:
        raise PredictError(f"extension must be positive, got {extension}")
    ow, oh = min(x2, w) - max(x1, 0.0), min(y2, h) - max(y1, 0.0)
    if ow <= 0 or oh <= 0:
        raise PredictError(f"{path}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) does not overlap the {w}x{h} image")
    if min(ow, oh) < MIN_OVERLAP:
        warnings.warn(PredictWarning(f"{path}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) overlaps the {w}x{h} "
                                     f"image by only {ow:g} x {oh:g} px; the prediction is likely meaningless"))
    corners = np.array([[x1, y1, 1.0, 1.0], [x2, y2, 1.0, 1.0]])  # x, y, annotated, visible
    geometry = codec.crop_geometry(corners, (h, w), codec.eval_draws(extension), size=1)
    return geometry.crop_box.astype(np.float64)


def make_crop(image_bgr: np.ndarray, crop_box: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) float32 normalised RGB network input for the region ``crop_box`` (x0, y0, w, h) of an
    (H, W, 3) BGR image."""
    x0, y0, w, h = (float(v) for v in crop_box)
    sx, sy = size / w, size / h
    # Continuous pixels p_c = p_cv + 0.5: dst_c = s * (src_c - x0)  =>  dst_cv = s*src_cv + s*0.5 - s*x0 - 0.5
    m = np.array([[sx, 0.0, sx * 0.5 - sx * x0 - 0.5], [0.0, sy, sy * 0.5 - sy * y0 - 0.5]])
    crop = cv2.warpAffine(image_bgr.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return normalize(crop[:, :, ::-1])  # BGR -> RGB, as the pipeline decodes


def predict_images(model, images, *, boxes=None, extension: float = AugmentSpec().test_extension, batch_size: int = 32) -> list[Prediction]:
    """Joints for each image path (with an optional person box ``x1, y1, x2, y2`` each, None = whole
    image), in batches of ``batch_size`` crops through ``model`` (a Keras regressor)."""
    size = int(model.input_shape[1])
    boxes = boxes if boxes is not None else [None] * len(images)
    if len(boxes) != len(images):
        raise PredictError(f"{len(boxes)} boxes for {len(images)} images")
    crops, infos = [], []
    for path, box in zip(images, boxes):
        img = read_image(path)
        cb = crop_box_for(box, img.shape[:2], extension, str(path))
        crops.append(make_crop(img, cb, size))
        infos.append((str(path), cb, None if box is None else tuple(float(v) for v in box)))
    out = []
    for i in range(0, len(crops), batch_size):
        batch = np.stack(crops[i:i + batch_size])
        t = model(batch, training=False).numpy().reshape(len(batch), -1, 2)
        for (path, cb, box), ti in zip(infos[i:i + batch_size], t):
            out.append(Prediction(path, cb, codec.decode(ti, cb), box))
    return out


def refine_images(model, preds: list[Prediction], *, sigma: float, skeleton_name: str,
                  batch_size: int = 32) -> list[Prediction]:
    """One cascade stage on predictions ``preds`` (``cascade.links``; Toshev & Szegedy 2014, section 3.2):
    every joint re-estimated from a square crop about it of side ``sigma`` times the torso diameter of the
    current estimate (``links.crop_sides``), cut as the training pipeline cuts joint crops (not clipped to
    the image: the border pixels repeat), through ``model``, whose output pair ``k`` is joint ``k``'s (a
    joint-conditioned network is told ``k``).
    Returns new ``Prediction``s (the same images, crop and person boxes)."""
    size = model_lib.input_size(model)
    sk = skeletons.get(skeleton_name)
    out = []
    for pred in preds:
        image = read_image(pred.image)
        k = len(pred.joints)
        side = float(links.crop_sides(pred.joints[None], sk, sigma, np.array([max(pred.crop_box[2:])]))[0])
        boxes = np.column_stack([pred.joints - 0.5 * side, np.full((k, 2), side)])  # (K, 4) x0, y0, w, h
        crops = np.stack([make_crop(image, box, size) for box in boxes])
        joint_ids = np.arange(k, dtype=np.int32)
        t = np.concatenate([model(model_lib.model_inputs(model, crops[i:i + batch_size], joint_ids[i:i + batch_size]),
                                  training=False).numpy()
                            for i in range(0, k, batch_size)]).reshape(k, k, 2)[np.arange(k), np.arange(k)]
        joints = codec.decode(t[:, None, :], boxes)[:, 0]
        out.append(Prediction(pred.image, pred.crop_box, joints, pred.box, [*pred.stages, joints]))
    return out


def write_outputs(pred: Prediction, skeleton_name: str, out_dir: str | os.PathLike,
                  name: str | None = None) -> tuple[Path, Path]:
    """``<name>.joints.json`` and ``<name>.pose.png`` (``viz.draw_pose``) in ``out_dir``; ``name``
    defaults to the image's stem (``output_names`` makes them unique over several images)."""
    sk = skeletons.get(skeleton_name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name if name is not None else Path(pred.image).stem
    doc = {"image": pred.image, "skeleton": sk.name, "crop_box_xywh": [float(v) for v in pred.crop_box],
           "box_xyxy": None if pred.box is None else list(pred.box),
           "pixel_convention": "continuous (pixel i covers [i, i+1))",
           "joints": [{"name": n, "x": float(x), "y": float(y)} for n, (x, y) in zip(sk.joint_names, pred.joints)]}
    if len(pred.stages) > 1:  # a cascade: every stage's estimate, the last = "joints"
        doc["stages"] = [{"stage": i + 1, "joints": [[float(x), float(y)] for x, y in joints]}
                         for i, joints in enumerate(pred.stages)]
    json_path = out_dir / f"{name}.joints.json"
    json_path.write_text(json.dumps(doc, indent=2))
    drawn = viz.draw_pose(read_image(pred.image), pred.joints, sk, crop_box=pred.crop_box, box=pred.box)
    png_path = viz.write_png(out_dir / f"{name}.pose.png", drawn)
    return json_path, png_path


def predict_files(snapshot, images, *, box=None, extension: float | None = None,
                  out_dir: str | os.PathLike = "predictions") -> list[tuple[Prediction, Path, Path]]:
    """The ``predict`` command: the joints of the person in each image with ``snapshot`` (checkpoint or run
    folder; a cascade stage's runs the whole cascade: ``refine_images``), written as ``NAME.joints.json``
    and ``NAME.pose.png`` in ``out_dir`` (``output_names``).

    Args:
        images: image paths (files); box: one person box ``x1, y1, x2, y2`` for all images, None = the
            whole image; extension: the box extension, None = the checkpoint's test extension.
    Returns ``(prediction, json path, png path)`` per image, in order. Everything that can fail on the
    user's paths (an image that is missing or a folder, an unwritable ``out_dir``, a bad snapshot) raises
    ``PredictError`` or ``checkpoint.CheckpointError`` before the network runs.
    """
    images = [str(image) for image in images]  # as given: the JSON names the image so
    for image in images:
        check_image_path(image)
    out_dir = check_out_dir(out_dir)
    names = output_names(images)
    stages = links.chain(snapshot)  # a cascade stage's snapshot runs every stage up to its own
    first = stages[0].ckpt
    preds = predict_images(checkpoint.build_model(first), images, boxes=None if box is None else [box] * len(images),
                           extension=float(extension or first.test_extension))
    skeleton_name = first.meta.get("skeleton") or "lsp"
    for stage in stages[1:]:
        preds = refine_images(checkpoint.build_model(stage.ckpt), preds, sigma=stage.sigma,
                              skeleton_name=skeleton_name)
    return [(p, *write_outputs(p, skeleton_name, out_dir, name)) for p, name in zip(preds, names)]
