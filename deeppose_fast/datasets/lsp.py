"""Leeds Sports Pose (LSP, 2000 images) and LSP-extended (LSPET, 10000 images) parsers.

Shapes: N people (one per image), 14 joints in ``skeleton.LSP`` order.

File facts (REFERENCE.md): ``joints.mat`` holds ``joints``, 3 x 14 x N in LSP (rows x, y, flag) and
14 x 3 x N in LSPET; the layout tells the two apart. LSP's flag means "occluded" (visible = flag == 0),
LSPET's means "visible"; LSPET marks joints that are not annotated with coordinates <= 0. Images are
``images/imNNNN.jpg`` (LSP, 4 digits) and ``images/imNNNNN.jpg`` (LSPET, 5 digits), index = N - 1.
Coordinates are 1-based MATLAB pixels: ``x = x_file - 0.5`` gives continuous pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deeppose_fast import skeleton
from deeppose_fast.datasets.base import DatasetError, PoseData, load_mat

LSP_KIND, LSPET_KIND = "lsp", "lspet"
NUM_JOINTS = skeleton.LSP.num_joints
_DIGITS = {LSP_KIND: 4, LSPET_KIND: 5}
SKIP_NONFINITE = "non-finite joint coordinates"
SKIP_NO_JOINTS = "no annotated joint"


def load_joints(path: str | Path) -> tuple[np.ndarray, str]:
    """Read a ``joints.mat`` in either layout.

    Returns:
        ``(joints, kind)``: joints (N, 14, 3) float64 as in the file (x, y, flag; 1-based pixels) and
        kind ``"lsp"`` (3 x 14 x N file) or ``"lspet"`` (14 x 3 x N file).
    Raises:
        DatasetError: not a MATLAB file, no ``joints`` variable, or a shape that is neither layout.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected LSP's joints.mat)")
    mat = load_mat(path)
    if "joints" not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path}: no variable 'joints' (found {names})")
    joints = mat["joints"]
    if not np.issubdtype(joints.dtype, np.number):
        raise DatasetError(f"{path}: 'joints' is {joints.dtype}, expected numbers")
    if joints.ndim == 2:  # MATLAB drops a trailing singleton dimension: one image
        joints = joints[:, :, None]
    if joints.ndim != 3:
        raise DatasetError(f"{path}: 'joints' has shape {joints.shape}, expected 3 x 14 x N (LSP) "
                           f"or 14 x 3 x N (LSPET)")
    if joints.shape[:2] == (3, NUM_JOINTS):
        return np.ascontiguousarray(joints.transpose(2, 1, 0), dtype=np.float64), LSP_KIND
    if joints.shape[:2] == (NUM_JOINTS, 3):
        return np.ascontiguousarray(joints.transpose(2, 0, 1), dtype=np.float64), LSPET_KIND
    raise DatasetError(f"{path}: 'joints' has shape {joints.shape}, expected 3 x 14 x N (LSP) "
                       f"or 14 x 3 x N (LSPET)")


def image_name(kind: str, index: int) -> str:
    """``images/im0001.jpg`` for LSP index 0, ``images/im00001.jpg`` for LSPET index 0."""
    return f"images/im{index + 1:0{_DIGITS[kind]}d}.jpg"


def parse(path: str | Path) -> dict:
    """Parse one ``joints.mat`` and its folder (images are not opened).

    Returns a dict of arrays for the M usable people (index = image index):
        ``kind``, ``index`` (M,) int64 image index, ``image_paths`` (M,) str, ``joints`` (M, 14, 2)
        float32 continuous pixels with NaN where not annotated, ``visible`` (M, 14) bool,
        ``num_images`` (N in the file), ``skipped`` reason -> count.
    """
    # not resolved: a joints.mat reached through a link belongs to the folder it was found in, whose
    # images/ are the data set's (the link's target may lie anywhere)
    path = Path(path).absolute()
    raw, kind = load_joints(path)
    xy, flag = raw[..., :2], raw[..., 2]
    skipped = {}
    finite = np.isfinite(xy).all(axis=(1, 2)) & np.isfinite(flag).all(axis=1)
    if kind == LSPET_KIND:
        annotated = (xy > 0).all(axis=-1)  # LSPET's "missing" marker: coordinates <= 0
        visible = annotated & (flag == 1)
    else:
        annotated = np.ones(flag.shape, dtype=bool)
        visible = flag == 0  # LSP's flag is "occluded"
    keep = finite & annotated.any(axis=1)
    skipped[SKIP_NONFINITE] = int((~finite).sum())
    skipped[SKIP_NO_JOINTS] = int((finite & ~annotated.any(axis=1)).sum())
    joints = np.where(annotated[..., None], xy - 0.5, np.nan).astype(np.float32)
    index = np.flatnonzero(keep)
    folder = path.parent
    return {
        "kind": kind,
        "index": index.astype(np.int64),
        "image_paths": np.array([str(folder / image_name(kind, i)) for i in index], dtype=str),
        "joints": joints[keep],
        "visible": visible[keep],
        "num_images": len(raw),
        "skipped": {k: v for k, v in skipped.items() if v},
        "path": path,
    }


def find(root: Path, kind: str) -> Path:
    """The ``joints.mat`` of the wanted kind in ``root`` or up to two folder levels below it."""
    candidates = [root / "joints.mat", *sorted(root.glob("*/joints.mat")), *sorted(root.glob("*/*/joints.mat"))]
    seen = []
    for candidate in candidates:
        if candidate.is_file():
            _, found_kind = load_joints(candidate)
            seen.append(f"{candidate} ({found_kind})")
            if found_kind == kind:
                return candidate
    layout = "3 x 14 x N" if kind == LSP_KIND else "14 x 3 x N"
    raise DatasetError(f"{root}: no {kind.upper()} joints.mat ({layout}) in the folder or two levels below"
                       + (f"; found {', '.join(seen)}" if seen else ""))


def read(name: str, root: Path) -> PoseData:
    """``lsp``, ``lspet`` or ``lsp-ext`` from ``root`` (see ``deeppose_fast.datasets.read``).

    People are ordered LSP first (image order), then LSPET; ``image_ids`` count LSP images from 0 and
    LSPET images from the number of LSP images, so they are unique within ``lsp-ext``.
    """
    parts = {LSP_KIND: name in ("lsp", "lsp-ext"), LSPET_KIND: name in ("lspet", "lsp-ext")}
    arrays, skipped, files, id_offset = [], {}, [], 0
    for kind in (LSP_KIND, LSPET_KIND):
        if not parts[kind]:
            continue
        p = parse(find(root, kind))
        if kind == LSP_KIND:
            # DTF: LSP images 1..1000 train, 1001..2000 test (the first half of the file in general)
            split = np.where(p["index"] < p["num_images"] // 2, "train", "test")
        else:
            split = np.full(len(p["index"]), "train")
        arrays.append((p, split, id_offset))
        for reason, count in p["skipped"].items():
            key = f"{kind}: {reason}"
            skipped[key] = skipped.get(key, 0) + count
        files.append(str(p["path"]))
        id_offset += p["num_images"]
    n = sum(len(p["index"]) for p, _, _ in arrays)
    return PoseData(
        image_paths=np.concatenate([p["image_paths"] for p, _, _ in arrays]),
        image_ids=np.concatenate([p["index"] + off for p, _, off in arrays]),
        joints=np.concatenate([p["joints"] for p, _, _ in arrays]),
        visible=np.concatenate([p["visible"] for p, _, _ in arrays]),
        head_box=np.full((n, 4), np.nan, np.float32),
        split=np.concatenate([s for _, s, _ in arrays]),
        skeleton=skeleton.LSP,
        skipped=skipped,
        name=name,
        annotation_files=tuple(files),
    )
