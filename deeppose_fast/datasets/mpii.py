"""MPII Human Pose parser (``mpii_human_pose_v1_u12_1.mat``, struct ``RELEASE``), also used for the
synthetic data set, which is written in the same format.

Shapes: N people, 16 joints in ``skeleton.MPII`` order (= MPII joint ids).

Struct quirks handled (scipy.io.loadmat with ``squeeze_me=True, struct_as_record=False``, so a
one-element struct array comes back as a bare struct and an empty one as an empty array):
``annorect`` may be missing, empty, one struct or an array; ``annopoints`` may be missing or empty;
``point`` may be one struct or an array, and a joint that is not annotated is simply absent from it;
``is_visible`` may be a number, a string (``'1'``), or empty (then the joint counts as annotated but
not visible, as DTF and mitmul/deeppose read it); images with ``img_train == 0`` carry no joints.
Head boxes (``x1, y1, x2, y2``) are kept. Coordinates are 1-based MATLAB pixels: ``x = x_file - 0.5``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deeppose_fast import skeleton
from deeppose_fast.datasets.base import (DTF_SEED, SYNTHETIC_MIN_JOINTS, DatasetError, PoseData,
                                         image_split, load_mat, person_split)

MAT_NAME = "mpii_human_pose_v1_u12_1.mat"
NUM_JOINTS = skeleton.MPII.num_joints

SKIP_TEST_IMAGE = "not a training image (img_train = 0)"
SKIP_NO_POINTS = "no annotated joint"
SKIP_TOO_FEW = "too few annotated joints"
SKIP_NONFINITE = "non-finite joint coordinates"
SKIP_BAD_ID = "joint id outside 0..15"
SKIP_DUP_ID = "joint id annotated twice"
SKIP_NO_NAME = "image without a file name"


def _items(value) -> list:
    """A MATLAB struct array as a list: missing / empty -> [], one struct -> [it], array -> its items."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel()) if value.dtype == object else []
    return [value]


def _number(value) -> float:
    """A MATLAB scalar as float; empty -> NaN. Raises ValueError for anything else."""
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return float("nan")
        if value.size != 1:
            raise ValueError(f"expected a scalar, got an array of shape {value.shape}")
        value = value.item()
    if isinstance(value, (str, bytes)):
        value = value.strip() or "nan"
    return float(value)


def _visible(value) -> bool:
    """``is_visible`` as bool: 1 / '1' / True -> True; 0, '0', empty or anything odd -> False."""
    try:
        v = _number(value)
    except (ValueError, TypeError):
        return False
    return bool(np.isfinite(v) and v == 1)


def _field(struct, name, default=None):
    return getattr(struct, name, default) if hasattr(struct, "_fieldnames") else default


def load_release(path: str | Path):
    """``(annolist, img_train)``: the list of image structs and (num_images,) int array.

    Raises:
        DatasetError: not a MATLAB file, no ``RELEASE`` struct, or fields of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected MPII's {MAT_NAME})")
    mat = load_mat(path, squeeze_me=True, struct_as_record=False)
    release = mat.get("RELEASE")
    if release is None or not hasattr(release, "_fieldnames"):
        names = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path}: no struct 'RELEASE' (found {names})")
    for name in ("annolist", "img_train"):
        if name not in release._fieldnames:
            raise DatasetError(f"{path}: RELEASE has no field '{name}' (fields: {release._fieldnames})")
    annolist = _items(release.annolist)
    if not all(hasattr(a, "_fieldnames") for a in annolist):
        raise DatasetError(f"{path}: RELEASE.annolist is not a struct array")
    try:
        img_train = np.atleast_1d(np.asarray(release.img_train, dtype=np.float64)).ravel()
    except (ValueError, TypeError):
        raise DatasetError(f"{path}: RELEASE.img_train is not numeric") from None
    if len(img_train) != len(annolist):
        raise DatasetError(f"{path}: RELEASE.img_train has {len(img_train)} entries but annolist has "
                           f"{len(annolist)} images")
    return annolist, img_train.astype(np.int64)


def _parse_rect(rect):
    """One ``annorect``: ``(xy (16, 2) file coords NaN = absent, visible (16,), head (4,), problem)``."""
    xy = np.full((NUM_JOINTS, 2), np.nan)
    vis = np.zeros(NUM_JOINTS, dtype=bool)
    try:
        head = np.array([_number(_field(rect, k, np.array([]))) for k in ("x1", "y1", "x2", "y2")])
    except (ValueError, TypeError):
        head = np.full(4, np.nan)
    annopoints = _items(_field(rect, "annopoints"))
    points = _items(_field(annopoints[0], "point")) if annopoints else []
    if not points:
        return xy, vis, head, SKIP_NO_POINTS
    for point in points:
        try:
            jid = _number(_field(point, "id", np.array([])))
            x = _number(_field(point, "x", np.array([])))
            y = _number(_field(point, "y", np.array([])))
        except (ValueError, TypeError):
            return xy, vis, head, SKIP_NONFINITE
        if not (np.isfinite(jid) and jid == int(jid) and 0 <= jid < NUM_JOINTS):
            return xy, vis, head, SKIP_BAD_ID
        jid = int(jid)
        if not np.isnan(xy[jid, 0]):
            return xy, vis, head, SKIP_DUP_ID
        if not (np.isfinite(x) and np.isfinite(y)):
            return xy, vis, head, SKIP_NONFINITE
        xy[jid] = x, y
        vis[jid] = _visible(_field(point, "is_visible", np.array([])))
    return xy, vis, head, None


def find_files(root: Path) -> tuple[Path, Path]:
    """``(mat file, images folder)`` in ``root`` or up to three levels below (the layout of the two
    extracted official archives side by side). Prefers ``mpii_human_pose_v1_u12_1.mat``; else the only
    ``.mat`` file found."""
    levels = ["", "*/", "*/*/", "*/*/*/"]
    mats = [p for lv in levels for p in sorted(root.glob(f"{lv}{MAT_NAME}"))]
    if not mats:
        mats = [p for lv in levels for p in sorted(root.glob(f"{lv}*.mat"))]
        if len(mats) > 1:
            raise DatasetError(f"{root}: no {MAT_NAME} and several .mat files ({', '.join(map(str, mats))}); "
                               f"point --source at the folder holding the right one")
    if not mats:
        raise DatasetError(f"{root}: no {MAT_NAME} (or other .mat file) in the folder or three levels below")
    images = [p for lv in levels for p in sorted(root.glob(f"{lv}images")) if p.is_dir()]
    if not images:
        raise DatasetError(f"{root}: no 'images' folder in the folder or three levels below")
    return mats[0], images[0]


def read(name: str, root: Path, *, split_mode: str = "person", seed: int = DTF_SEED) -> PoseData:
    """``mpii`` or ``synthetic`` from ``root`` (see ``deeppose_fast.datasets.read``).

    People are ordered by image, then by ``annorect`` index (DTF's order, which its permutation indexes).
    ``mpii`` keeps people of training images with all 16 joints; ``synthetic`` keeps people of training
    images with at least ``SYNTHETIC_MIN_JOINTS`` joints and always splits by image.
    """
    mat_path, images = find_files(root)
    mat_path = mat_path.absolute()  # where it was found (see lsp.parse), not a link's target
    annolist, img_train = load_release(mat_path)
    min_joints = NUM_JOINTS if name == "mpii" else SYNTHETIC_MIN_JOINTS
    skipped: dict[str, int] = {}
    rows = []  # (image path, image id, rect id, xy, visible, head)
    for i, (anno, train) in enumerate(zip(annolist, img_train)):
        rects = _items(_field(anno, "annorect"))
        if train != 1:
            if rects:
                skipped[SKIP_TEST_IMAGE] = skipped.get(SKIP_TEST_IMAGE, 0) + len(rects)
            continue
        image = _items(_field(anno, "image"))
        image_name = _field(image[0], "name") if image else None
        if not isinstance(image_name, str) or not image_name:
            if rects:
                skipped[SKIP_NO_NAME] = skipped.get(SKIP_NO_NAME, 0) + len(rects)
            continue
        for r, rect in enumerate(rects):
            xy, vis, head, problem = _parse_rect(rect)
            if problem is None and np.isfinite(xy[:, 0]).sum() < min_joints:
                problem = SKIP_TOO_FEW
            if problem is not None:
                skipped[problem] = skipped.get(problem, 0) + 1
                continue
            rows.append((str(images / image_name), i, r, xy, vis, head))
    n = len(rows)
    image_ids = np.array([row[1] for row in rows], dtype=np.int64)
    if name == "mpii" and split_mode == "person":
        split = person_split(n, seed)
    else:
        split = image_split(image_ids, seed)
    xy = np.array([row[3] for row in rows], dtype=np.float64).reshape(n, NUM_JOINTS, 2)
    head = np.array([row[5] for row in rows], dtype=np.float64).reshape(n, 4)
    return PoseData(
        image_paths=np.array([row[0] for row in rows], dtype=str),
        image_ids=image_ids,
        joints=(xy - 0.5).astype(np.float32),
        visible=np.array([row[4] for row in rows], dtype=bool).reshape(n, NUM_JOINTS),
        head_box=(head - 0.5).astype(np.float32),
        split=split,
        skeleton=skeleton.MPII,
        skipped=skipped,
        name=name,
        rect_ids=np.array([row[2] for row in rows], dtype=np.int64),
        annotation_files=(str(mat_path),),
    )
