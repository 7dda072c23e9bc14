"""The synthetic data set in the official file formats: many scenes rendered to JPEGs (in a pool of
processes, deterministic per image), the LSP, LSPET and MPII annotation files with their quirks, and
``synthetic_truth.npz``, the ground truth drawn (``Truth``). ``generate`` writes one format at a size
(``SCALES``)."""
from __future__ import annotations

import io
import multiprocessing
import os
import signal
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

from deeppose_fast import skeleton
from deeppose_fast.datasets.synthetic.body import JOINTS as _J
from deeppose_fast.datasets.synthetic.body import NUM_JOINTS as _K
from deeppose_fast.datasets.synthetic.render import render_scene

TRUTH_FILE = "synthetic_truth.npz"
MPII_MAT = "mpii_human_pose_v1_u12_1.mat"

# images per format at each scale: "small" is a few thousand people (CI, the CPU training preset);
# "mpii" is MPII's size (about 20k annotated people) and LSP/LSPET's real sizes; "real" is MPII's size
# at MPII's frame sizes (people a few hundred pixels tall), for measuring the input at real scale.
SCALES = {
    "small": {"lsp": 2000, "lspet": 3000, "mpii": 2400},
    "mpii": {"lsp": 2000, "lspet": 10000, "mpii": 15200},
    "real": {"lsp": 2000, "lspet": 10000, "mpii": 15200},
}
# MPII frame sizes (W, H) per scale, drawn uniformly per image: 640 x 480 keeps a 20k-people set fast to
# write and to decode here; "real" is mostly MPII's 1280 x 720, with some 854 x 480 and 1920 x 1080.
MPII_IMAGE_SIZES = {"small": ((480, 360),), "mpii": ((640, 480),),
                    "real": ((1280, 720),) * 6 + ((854, 480), (1920, 1080))}
# LSP-like person-centric images (W, H), drawn at random per image
LSP_IMAGE_SIZES = ((240, 320), (300, 400), (320, 240), (400, 300), (360, 360), (270, 360))

# LSP's 14 joints as MPII indices, by name (LSP "neck" is MPII's "upper_neck")
LSP_FROM_MPII = np.array([_J["upper_neck" if n == "neck" else n] for n in skeleton.LSP.joint_names])
_JPEG_QUALITY = 90
# MATLAB header text: fixed, so the same seed gives the same bytes (savemat writes the date otherwise)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by deeppose_fast.datasets.synthetic"


# ----------------------------------------------------------------------------------------------
# rendering many images (optionally in a pool of processes, deterministic per image)
_FORMAT_CODE = {"lsp": 1, "lspet": 2, "mpii": 3}


@dataclass(frozen=True)
class _Spec:
    fmt: str
    seed: int
    folder: str
    sizes: tuple
    people_p: tuple  # probabilities of 1, 2, 3 ... people
    out_of_frame: float
    occluder: float


def _render_one(spec: _Spec, index: int, name: str) -> tuple[list, tuple[int, int], int]:
    rng = np.random.default_rng([spec.seed, _FORMAT_CODE[spec.fmt], index])
    w, h = spec.sizes[rng.integers(len(spec.sizes))]
    n = int(rng.choice(len(spec.people_p), p=spec.people_p)) + 1
    for _ in range(20):
        scene = render_scene(rng, w, h, n, out_of_frame=spec.out_of_frame, occluder=spec.occluder)
        if spec.out_of_frame > 0 or all(p.in_frame.all() for p in scene.people):
            break
    else:  # pragma: no cover - placement keeps people inside; this guards the LSP format's promise
        raise RuntimeError(f"could not place a person inside {w}x{h} image {index}")
    ok, buf = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise RuntimeError(f"JPEG encoding failed for image {index}")
    (Path(spec.folder) / name).write_bytes(buf.tobytes())
    return scene.people, (w, h), len(buf)


def _render_task(args):
    return _render_one(*args)


def _init_worker():
    cv2.setNumThreads(1)  # one process per core already
    # Ctrl-C reaches the whole process group: the parent stops the pool; a worker would only print a
    # traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render_all(spec: _Spec, names: list[str], workers: int | None, progress: bool | None = None) -> list:
    """Render and write every image; returns ``[(people, (w, h), nbytes)]`` in image order. ``progress``:
    a bar on stderr (None: only on a terminal). Leaving early (Ctrl-C) terminates the worker processes."""
    Path(spec.folder).mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(names) >= 400 else 1
    tasks = [(spec, i, name) for i, name in enumerate(names)]
    bar = dict(total=len(tasks), desc=f"generating synthetic {spec.fmt}", unit="img",
               disable=None if progress is None else not progress, leave=False)
    if workers <= 1:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return [_render_task(t) for t in tqdm(tasks, **bar)]
        finally:
            cv2.setNumThreads(threads)
    # forkserver: a clean process, safe even when the caller has TensorFlow or DALI threads running
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(_render_task, tasks, chunksize=16), **bar))


# ----------------------------------------------------------------------------------------------
# ground truth
@dataclass
class Truth:
    """What a writer drew, per person (N people, K joints of the written format: 14 LSP, 16 MPII).

    Attributes:
        fmt: ``"lsp"``, ``"lspet"`` or ``"mpii"``.
        image_names: (N,) str, file names under ``images/``.
        image_index: (N,) int64, the image's position in the annotation file (0-based).
        rect_index: (N,) int64, the person's ``annorect`` index in its image (0-based; 0 for LSP).
        joints: (N, K, 2) float32, continuous pixels; NaN where not annotated (out of frame).
        visible: (N, K) bool, drawn visible (False where not annotated).
        visible_flag: (N, K) int8, what the file says: 1, 0; -1 = MPII ``is_visible`` left empty;
            -2 = not annotated.
        head_box: (N, 4) float32 x1, y1, x2, y2, continuous pixels (in the file for MPII only).
        annotated: (N,) bool, the person's joints are in the file (MPII: train image with annopoints).
        image_size: (N, 2) int64 W, H.
    """

    fmt: str
    image_names: np.ndarray
    image_index: np.ndarray
    rect_index: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    visible_flag: np.ndarray
    head_box: np.ndarray
    annotated: np.ndarray
    image_size: np.ndarray

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(path, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def load(cls, root_or_file: str | os.PathLike) -> "Truth":
        """Load ``synthetic_truth.npz`` (give the file or the folder holding it)."""
        path = Path(root_or_file)
        if path.is_dir():
            path = path / TRUTH_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no synthetic ground truth (written by deeppose_fast.datasets.synthetic)")
        with np.load(path, allow_pickle=False) as z:
            kw = {f.name: z[f.name] for f in fields(cls)}
        kw["fmt"] = str(kw["fmt"])
        return cls(**kw)


def _truth(fmt: str, names: list[str], rendered: list, joint_index: np.ndarray, annotated_fn=None,
           flags=None) -> Truth:
    rows = []
    for i, (people, size, _) in enumerate(rendered):
        for r, p in enumerate(people):
            rows.append((i, r, p, size))
    n, k = len(rows), len(joint_index)
    joints = np.full((n, k, 2), np.nan, np.float32)
    visible = np.zeros((n, k), bool)
    head_box = np.zeros((n, 4), np.float32)
    annotated = np.ones(n, bool)
    for row, (i, r, p, _) in enumerate(rows):
        inside = p.in_frame[joint_index]
        joints[row][inside] = p.joints[joint_index][inside]
        visible[row] = p.visible[joint_index] & inside
        head_box[row] = p.head_box
        if annotated_fn is not None:
            annotated[row] = annotated_fn(i, r)
    if flags is None:
        flags = np.where(np.isnan(joints[..., 0]), -2, visible.astype(np.int8)).astype(np.int8)
    return Truth(fmt=fmt, image_names=np.array([names[i] for i, *_ in rows], dtype=str),
                 image_index=np.array([i for i, *_ in rows], np.int64),
                 rect_index=np.array([r for _, r, *_ in rows], np.int64),
                 joints=joints, visible=visible, visible_flag=flags, head_box=head_box, annotated=annotated,
                 image_size=np.array([s for *_, s in rows], np.int64).reshape(n, 2))


def _savemat(path: Path, data: dict) -> None:
    """scipy.io.savemat with a fixed header text (it writes the creation date otherwise)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, data, do_compression=True, oned_as="row")
    raw = bytearray(buf.getvalue())
    raw[:116] = _MAT_HEADER.ljust(116, b" ")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(raw))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# writers
def write_lsp(root: str | os.PathLike, num_images: int = 2000, seed: int = 0, *, workers: int | None = None,
              progress: bool | None = None) -> Truth:
    """Write an LSP-format data set: ``images/imNNNN.jpg`` (4 digits, from im0001) and ``joints.mat`` with
    ``joints`` (3, 14, N): rows x, y (1-based pixels, ``x_file = x + 0.5``) and the flag
    ``1 - visible`` ("occluded"). One person per image, every joint inside the image (LSP annotates all).
    Returns the ``Truth`` (also saved as ``synthetic_truth.npz``)."""
    truth = _render_lsp_family("lsp", root, num_images, 4, seed, 0.0, workers, progress)
    joints = np.zeros((3, 14, num_images))
    joints[:2] = (truth.joints + 0.5).transpose(2, 1, 0)
    joints[2] = 1 - truth.visible.T
    return _save_lsp_family(root, joints, truth)


def write_lspet(root: str | os.PathLike, num_images: int = 10000, seed: int = 0, *,
                workers: int | None = None, progress: bool | None = None) -> Truth:
    """Write an LSP-extended-format data set: ``images/imNNNNN.jpg`` (5 digits) and ``joints.mat`` with
    ``joints`` (14, 3, N): columns x, y (1-based pixels) and the flag ``visible``. Joints out of the frame
    are not annotated: they carry coordinates <= 0 (0 or negative, as in the real file) and flag 0.
    Returns the ``Truth`` (also saved as ``synthetic_truth.npz``)."""
    truth = _render_lsp_family("lspet", root, num_images, 5, seed, 0.15, workers, progress)
    joints = np.zeros((14, 3, num_images))
    joints[:, :2] = (truth.joints + 0.5).transpose(1, 2, 0)
    joints[:, 2] = truth.visible.T
    missing = np.isnan(truth.joints[..., 0]).T  # (14, N)
    rng = np.random.default_rng([seed, 99])
    joints[:, 0][missing] = np.where(rng.random(missing.sum()) < 0.5, 0.0, -rng.integers(1, 50, missing.sum()))
    joints[:, 1][missing] = np.where(rng.random(missing.sum()) < 0.5, 0.0, -rng.integers(1, 50, missing.sum()))
    joints[:, 2][missing] = 0
    return _save_lsp_family(root, joints, truth)


def _render_lsp_family(fmt: str, root, num_images: int, digits: int, seed: int, out_of_frame: float,
                       workers: int | None, progress: bool | None) -> Truth:
    """Render the one-person images of LSP or LSPET (``images/im`` + ``digits``-digit index, from 1) and
    return their ``Truth`` in LSP's joint order."""
    if not 1 <= num_images <= 10 ** digits - 1:
        raise ValueError(f"{fmt.upper()} names have {digits} digits: num_images must be in "
                         f"1..{10 ** digits - 1}, got {num_images}")
    names = [f"im{i + 1:0{digits}d}.jpg" for i in range(num_images)]
    spec = _Spec(fmt, seed, str(Path(root) / "images"), LSP_IMAGE_SIZES, (1.0,), out_of_frame=out_of_frame,
                 occluder=0.3)
    return _truth(fmt, names, _render_all(spec, names, workers, progress), LSP_FROM_MPII)


def _save_lsp_family(root, joints: np.ndarray, truth: Truth) -> Truth:
    """Write ``joints.mat`` (the format's own array layout) and the ground truth beside the images."""
    _savemat(Path(root) / "joints.mat", {"joints": joints})
    truth.save(Path(root) / TRUTH_FILE)
    return truth


_ACTS = (("sports", "running", 1), ("dancing", "ballet", 2), ("walking", "walking, general", 3),
         ("occupation", "standing, talking", 4), ("home activities", "sitting quietly", 5),
         ("conditioning exercise", "stretching", 6))


def _struct_array(records: list[dict], names: tuple[str, ...]) -> np.ndarray:
    """A 1 x n MATLAB struct array (savemat writes structured object arrays as struct arrays)."""
    arr = np.zeros((1, len(records)), dtype=[(n, object) for n in names])
    for i, rec in enumerate(records):
        for n in names:
            arr[0, i][n] = rec.get(n, np.zeros((0, 0)))
    return arr


def write_mpii(root: str | os.PathLike, num_images: int = 2400, seed: int = 0, *,
               image_size: tuple[int, int] | tuple[tuple[int, int], ...] = (480, 360), people_per_image: tuple[float, ...] = (0.6, 0.25, 0.15),
               train_fraction: float = 0.85, out_of_frame: float = 0.12, workers: int | None = None,
               progress: bool | None = None) -> Truth:
    """Write an MPII-format data set: ``images/NNNNNNNNN.jpg`` and ``mpii_human_pose_v1_u12_1.mat`` holding
    the struct ``RELEASE`` (``annolist``, ``img_train``, ``single_person``, ``act``, ``version``), with the
    real file's quirks: 1 or several people per image (a single one loads as a struct, not an array, with
    ``squeeze_me``), points in arbitrary order and absent where not annotated (out of frame),
    ``is_visible`` numeric, a string (``'1'``) or empty (some upper-neck / head-top points), test images
    (``img_train = 0``) whose rects have only ``scale`` and ``objpos``, and a few train-image rects without
    ``annopoints``. Coordinates are 1-based pixels (``x_file = x + 0.5``), the head box included.

    Args:
        image_size: (W, H) of every image (MPII's are mostly 1280 x 720; smaller is faster here), or a
            tuple of sizes, one drawn uniformly per image.
        people_per_image: probabilities of 1, 2, 3 ... people in an image.
        train_fraction: share of images with ``img_train = 1``.
        out_of_frame: probability that a person is partly out of the image.
    Returns the ``Truth`` (also saved as ``synthetic_truth.npz``).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    root = Path(root)
    file_rng = np.random.default_rng([seed, _FORMAT_CODE["mpii"], 10 ** 6])
    # real MPII names are scattered 9-digit numbers: the parser must take them from the file
    ids = file_rng.choice(10 ** 9 - 1, size=num_images, replace=False) + 1
    names = [f"{i:09d}.jpg" for i in ids]
    p = np.asarray(people_per_image, float)
    sizes = (tuple(image_size),) if np.ndim(image_size[0]) == 0 else tuple(tuple(s) for s in image_size)
    spec = _Spec("mpii", seed, str(root / "images"), sizes, tuple(p / p.sum()),
                 out_of_frame=out_of_frame, occluder=0.3)
    rendered = _render_all(spec, names, workers, progress)
    img_train = file_rng.random(num_images) < train_fraction
    no_points = {(i, r) for i, (people, *_) in enumerate(rendered) for r in range(len(people))
                 if file_rng.random() < 0.03}
    annotated_fn = lambda i, r: bool(img_train[i]) and (i, r) not in no_points  # noqa: E731
    truth = _truth("mpii", names, rendered, np.arange(_K), annotated_fn)
    truth.visible_flag[~truth.annotated] = -2  # the file holds no points for these people

    annolist, single_person, acts = [], [], []
    row = 0
    for i, (people, _, _) in enumerate(rendered):
        rects = []
        for r, person in enumerate(people):
            objpos = {"x": float(person.objpos[0] + 0.5), "y": float(person.objpos[1] + 0.5)}
            rect = {"scale": float(person.scale), "objpos": objpos}
            if img_train[i]:
                x1, y1, x2, y2 = (person.head_box + 0.5).tolist()
                rect.update(x1=x1, y1=y1, x2=x2, y2=y2)
                if (i, r) not in no_points:
                    points = []
                    for k in file_rng.permutation(_K):
                        if not person.in_frame[k]:
                            continue  # not annotated: simply absent
                        vis = int(person.visible[k])
                        u = file_rng.random()
                        if k in (_J["upper_neck"], _J["head_top"]) and u < 0.15:
                            flag, truth.visible_flag[row, k] = np.zeros((0, 0)), -1
                        elif u < 0.3:
                            flag = str(vis)
                        else:
                            flag = float(vis)
                        points.append({"id": float(k), "x": float(person.joints[k, 0] + 0.5),
                                       "y": float(person.joints[k, 1] + 0.5), "is_visible": flag})
                    rect["annopoints"] = {"point": _struct_array(points, ("id", "x", "y", "is_visible"))}
            rects.append(rect)
            row += 1
        names_r = ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos") if img_train[i] else ("scale", "objpos")
        annolist.append({"image": {"name": names[i]}, "annorect": _struct_array(rects, names_r),
                         "frame_sec": np.zeros((0, 0)), "vididx": np.zeros((0, 0))})
        # single_person: rects far enough from every other (1-based, a column)
        centers = np.array([pp.objpos for pp in people])
        heights = np.array([pp.scale * 200 for pp in people])
        alone = [r + 1 for r in range(len(people))
                 if all(abs(centers[r, 0] - centers[q, 0]) > 0.6 * (heights[r] + heights[q]) / 2
                        for q in range(len(people)) if q != r)]
        single_person.append(np.array(alone, float).reshape(-1, 1) if alone else np.zeros((0, 0)))
        cat, act, act_id = _ACTS[file_rng.integers(len(_ACTS))] if file_rng.random() < 0.8 else ("", "", -1)
        acts.append({"cat_name": cat, "act_name": act, "act_id": float(act_id)})

    sp = np.empty((num_images, 1), dtype=object)
    for i, v in enumerate(single_person):
        sp[i, 0] = v
    act_arr = _struct_array(acts, ("cat_name", "act_name", "act_id")).reshape(-1, 1)
    release = {
        "annolist": _struct_array(annolist, ("image", "annorect", "frame_sec", "vididx")),
        "img_train": img_train.astype(float)[None, :],
        "version": "12",
        "single_person": sp,
        "act": act_arr,
        "video_list": np.array([["synthetic"]], dtype=object),
    }
    _savemat(root / MPII_MAT, {"RELEASE": release})
    truth.save(root / TRUTH_FILE)
    return truth


WRITERS = {"lsp": write_lsp, "lspet": write_lspet, "mpii": write_mpii}


def generate(root: str | os.PathLike, fmt: str = "mpii", scale: str = "small", seed: int = 0, *,
             num_images: int | None = None, workers: int | None = None, progress: bool | None = None) -> Truth:
    """Write a synthetic data set of a size (``SCALES``) in one of the official formats.

    Args:
        scale: ``small``, ``mpii`` (the real data sets' sizes) or ``real`` (MPII's size at MPII's frame
            sizes); ``num_images`` overrides the count.
        workers: processes rendering images (None: 2 for 400 images or more, else 1).
        progress: a bar of images written on stderr; None shows it only on a terminal.
    """
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(WRITERS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(SCALES)}")
    n = SCALES[scale][fmt] if num_images is None else num_images
    kw = {"image_size": MPII_IMAGE_SIZES[scale]} if fmt == "mpii" else {}
    return WRITERS[fmt](root, n, seed, workers=workers, progress=progress, **kw)
