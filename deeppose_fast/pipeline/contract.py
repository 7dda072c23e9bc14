"""The contract both input loaders keep: ``dali`` (DALI, CPU or GPU) and ``reference`` (OpenCV + NumPy)
read the same prepared folders and hand out the same batches. Defined once here, imported by both:

- what a split is (``SplitInfo``, ``split_info``) and the errors a loader raises (``PipelineError``);
- the label mapping back to source-image pixels (``source_frame_labels``) and which records a rank reads
  (``shard_range``); the training draws under an ``AugmentSpec`` are ``codec.sample_draws``;
- the one image normalisation, ``(x - mean) / sqrt(var + NORM_EPSILON)`` per image and channel
  (population variance): ``standardize`` is the formula, ``normalize`` its NumPy form (one image),
  ``normalize_tf`` its TensorFlow form (a batch, used by the exported SavedModel), and the DALI graph's
  ``fn.normalize`` takes the same ``NORM_EPSILON``;
- the input device (``gpu_available``, ``resolve_device``).

Legend: B batch, H, W image size, C channels, K joints.

No DALI, TensorFlow or OpenCV at import: command lines read this module for ``PipelineError`` before any
of them load.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeppose_fast import skeleton as skeletons
from deeppose_fast.datasets import shards

NORM_EPSILON = 1.0  # added to the per-channel variance (pixel units^2): a flat crop stays finite
DEVICES = ("auto", "cpu", "gpu")


class PipelineError(RuntimeError):
    """A data set cannot be streamed (missing shard, empty split, corrupt record); the message names the
    folder and what is wrong."""


# splits ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitInfo:
    """What a loader needs from a prepared folder's manifest.

    Attributes:
        tars, indices: the split's shard paths and their DALI indices, in order.
        count: people in the split; num_joints: K; flip_perm: (K,) label permutation of a mirrored crop.
        skeleton: the manifest's layout name; rebuild_hint: how to rebuild the folder (for errors).
        manifest: the whole manifest as read (its pre-crop rule, for ``precrop.require_covers``).
    """

    shard_dir: Path
    split: str
    tars: list[str]
    indices: list[str]
    count: int
    num_joints: int
    flip_perm: tuple[int, ...]
    skeleton: str
    rebuild_hint: str = "re-run `deeppose-fast prepare` to rebuild it"
    manifest: shards.Manifest | None = None


def split_info(shard_dir: str | Path, split: str) -> SplitInfo:
    """Validate a prepared folder's split (shards and indices present and consistent, not empty: see
    ``shards.shard_paths``) and read its layout, reading ``manifest.json`` once. Raises
    ``PipelineError``."""
    shard_dir = Path(shard_dir)
    try:
        manifest = shards.Manifest.read(shard_dir)
        tars, idxs = shards.shard_paths(shard_dir, split, manifest)
    except shards.ShardError as e:
        raise PipelineError(str(e)) from None
    count = manifest.count(split)
    if count == 0 or not tars:
        raise PipelineError(f"{shard_dir}: split {split!r} is empty (0 people); nothing to stream")
    name = manifest.skeleton
    if name in skeletons.SKELETONS:
        skel = skeletons.get(name)
        perm, k = skel.flip_permutation, skel.num_joints
    else:  # a layout this version does not name: fall back to the manifest's own pairs
        k = int(manifest.num_joints or 0)
        if k <= 0:
            raise PipelineError(f"{shard_dir / shards.MANIFEST}: neither a known 'skeleton' nor 'num_joints'")
        p = list(range(k))
        for a, b in manifest.flip_pairs:
            p[a], p[b] = b, a
        perm = tuple(p)
    if manifest.num_joints is not None and int(manifest.num_joints) != k:
        raise PipelineError(f"{shard_dir / shards.MANIFEST}: num_joints {manifest.num_joints} does not "
                            f"match skeleton {name!r} ({k} joints)")
    return SplitInfo(shard_dir, split, [str(t) for t in tars], [str(i) for i in idxs], count, k, tuple(perm),
                     str(name), shards.rebuild_hint(shard_dir, manifest), manifest)


def as_split(data: str | Path | SplitInfo, split: str | None, default: str) -> SplitInfo:
    """``data`` itself when a loader is handed a split already read (a ``SplitInfo``: no second read of
    the manifest), else ``split_info(data, split or default)``. A ``split`` that contradicts the
    ``SplitInfo`` is a ValueError."""
    if isinstance(data, SplitInfo):
        if split not in (None, data.split):
            raise ValueError(f"split {split!r} asked for, but the SplitInfo given is of split {data.split!r}")
        return data
    return split_info(data, split or default)


def shard_range(count: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """``[start, end)`` of the records DALI's readers give shard ``shard_id`` of ``num_shards``."""
    return count * shard_id // num_shards, count * (shard_id + 1) // num_shards


# samples -----------------------------------------------------------------------------------------
def source_frame_labels(pose: np.ndarray, meta: np.ndarray, crop_box: np.ndarray) -> dict:
    """The evaluation labels of a batch in source-image pixels (shards store the pre-crop's frame).

    Args:
        pose: (B, K, 4) shard poses ``x, y, annotated, visible`` in the JPEG's frame.
        meta: (B, 10) shard meta (``shards.META_FIELDS``): head box (JPEG frame), pre-crop offset,
            person index, image id, scale (JPEG pixels per source pixel).
        crop_box: (B, 4) ``x0, y0, w, h`` of the crop in the source frame relative to the offset (the
            geometry's frame: ``codec.crop_geometry``).
    Returns:
        dict of ``crop_box`` (B, 4), ``joints`` (B, K, 2) NaN = not annotated, ``visible`` (B, K),
        ``head_box`` (B, 4), ``person_index`` (B,), ``image_id`` (B,), all in source-image pixels.
    """
    pose, meta = np.asarray(pose, np.float64), np.asarray(meta, np.float64)
    offset, scale = meta[:, 4:6], meta[:, shards.META_SCALE]
    annotated = pose[:, :, 2] > 0.5
    box = np.array(crop_box, dtype=np.float64)
    box[:, :2] += offset
    return {
        "crop_box": box,
        "joints": np.where(annotated[..., None], pose[:, :, :2] / scale[:, None, :] + offset[:, None, :], np.nan),
        "visible": annotated & (pose[:, :, 3] > 0.5),
        "head_box": meta[:, :4] / np.tile(scale, 2) + np.tile(offset, 2),
        "person_index": meta[:, 6].astype(np.int64),
        "image_id": meta[:, 7].astype(np.int64),
    }


# normalisation -----------------------------------------------------------------------------------
def standardize(x, mean, var, sqrt=np.sqrt):
    """The normalisation every network input gets: ``(x - mean) / sqrt(var + NORM_EPSILON)``, with
    ``mean`` and ``var`` the image's per-channel mean and population variance (broadcast against ``x``).
    ``sqrt`` is the array library's (``np.sqrt``, ``tf.sqrt``)."""
    return (x - mean) / sqrt(var + NORM_EPSILON)


def normalize(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 ``standardize``d copy of an (H, W, C) image (C <= 4, any real dtype).

    The statistics are taken in double precision by ``cv2.meanStdDev`` (NumPy's float64 reductions
    over the two image axes are ~100x slower on a 227 x 227 crop)."""
    import cv2  # late: this module is read by command lines that never touch an image

    x = np.ascontiguousarray(image, dtype=np.float32)
    mean, std = cv2.meanStdDev(x)
    return standardize(x, mean.ravel().astype(np.float32), (std.ravel() ** 2).astype(np.float32))


def normalize_tf(images):
    """(B, H, W, C) float32 ``standardize``d TensorFlow tensor from (B, H, W, C) images (any real dtype),
    statistics per image and channel."""
    import tensorflow as tf  # late: the loaders' contract must not load TensorFlow

    x = tf.cast(images, tf.float32)
    mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
    return standardize(x, mean, var, tf.sqrt)


# devices -----------------------------------------------------------------------------------------
def gpu_available() -> bool:
    """True when DALI sees at least one CUDA device (the test the loaders' ``device="auto"`` makes)."""
    try:
        from nvidia.dali import backend  # late: a costly import, only needed to answer this

        return backend.GetCUDADeviceCount() > 0
    except Exception:  # no driver, no libcuda: DALI raises various errors; all mean "no GPU"
        return False


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"gpu"`` where DALI sees a GPU, else ``"cpu"``; ``"cpu"``/``"gpu"`` pass through
    (``"gpu"`` without one is a ``PipelineError``)."""
    if device not in DEVICES:
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device == "gpu" and not gpu_available():
        raise PipelineError("device='gpu' was asked for but DALI sees no CUDA device; use device='cpu'")
    return device
