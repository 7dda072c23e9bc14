"""The reference loader: the DALI pipelines' work done with OpenCV and NumPy, from the same shards.

Per sample: decode the whole JPEG (``cv2.imdecode``; OpenCV cannot decode a region), take the region the
geometry names, warp it with the same src->dst matrix (``cv2.warpAffine``, bilinear, border pixels
repeated) and normalise per image and channel (``contract.normalize``, the DALI graph's normalisation in
NumPy). The geometry is ``codec.crop_geometry``, the NumPy twin of the native operator; splits, draws,
labels and errors are the shared ``contract``. Used for CPU parity checks and as the baseline of the
pipeline benchmark (``deeppose-fast bench pipeline``).

Legend: B batch, S input size, K joints.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import cv2
import numpy as np

from deeppose_fast import codec
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline.contract import PipelineError, SplitInfo, as_split, normalize, source_frame_labels
from deeppose_fast.specs import AugmentSpec


def opencv_matrix(matrix: np.ndarray) -> np.ndarray:
    """(2, 3) src->dst matrix in OpenCV's convention (pixel centres at integers) from one in the package's
    continuous convention (centres at i + 0.5): ``p_cv = M (q_cv + 0.5) - 0.5``."""
    m = np.asarray(matrix, np.float64).copy()
    m[:, 2] = m[:, 0] * 0.5 + m[:, 1] * 0.5 + m[:, 2] - 0.5
    return m


def crop_sample(jpeg: bytes, pose: np.ndarray, draws: np.ndarray, *, size: int, shift: float = 0.1,
                flip_perm=None, normalize_image: bool = True, where: str = "record", scale=None):
    """One crop. Returns ``(image (S, S, 3) float32 RGB, codec.Geometry)``.

    Args:
        jpeg: JPEG bytes; pose: (K, 4); draws: (7,) ``codec.DRAW_FIELDS``; where: names the record in errors;
        scale: (2,) of a region stored at reduced resolution (the record's ``meta[shards.META_SCALE]``).
    """
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PipelineError(f"{where}: its JPEG does not decode")
    return crop_decoded(bgr, pose, draws, size=size, shift=shift, flip_perm=flip_perm,
                        normalize_image=normalize_image, scale=scale)


def crop_decoded(bgr: np.ndarray, pose: np.ndarray, draws: np.ndarray, *, size: int, shift: float = 0.1,
                 flip_perm=None, normalize_image: bool = True, scale=None):
    """``crop_sample`` after the decode: ``bgr`` is the (H, W, 3) uint8 BGR image (loaders that cache
    decoded images call this directly). Returns ``(image (S, S, 3) float32 RGB, codec.Geometry)``."""
    g = codec.crop_geometry(pose, bgr.shape[:2], draws, size=size, shift=shift, flip_perm=flip_perm, scale=scale)
    return warp(bgr, g, size=size, normalize_image=normalize_image), g


def joint_crop_sample(jpeg: bytes, pose: np.ndarray, draws: np.ndarray, *, size: int, flip_perm=None,
                      normalize_image: bool = True, scale=None):
    """One joint crop of a cascade stage (``codec.joint_crop_geometry``; ``draws`` (5,)
    ``codec.JOINT_DRAW_FIELDS``). Returns ``(image (S, S, 3) float32 RGB, codec.Geometry)``."""
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PipelineError("a record's JPEG does not decode")
    d = np.asarray(draws, np.float32)
    g = codec.joint_crop_geometry(pose, bgr.shape[:2], d[:2], d[2], int(d[4]), size=size, flip=bool(d[3] > 0.5),
                                  flip_perm=flip_perm, scale=scale)
    return warp(bgr, g, size=size, normalize_image=normalize_image), g


def warp(bgr: np.ndarray, g: codec.Geometry, *, size: int, normalize_image: bool = True) -> np.ndarray:
    """(S, S, 3) float32 RGB: the region ``g`` names of the decoded (H, W, 3) BGR image, warped with its
    matrix (bilinear, border pixels repeated) and normalised."""
    x, y = int(g.anchor[0]), int(g.anchor[1])
    w, h = int(g.shape[0]), int(g.shape[1])
    region = cv2.cvtColor(bgr[y:y + h, x:x + w], cv2.COLOR_BGR2RGB)
    out = cv2.warpAffine(region.astype(np.float32), opencv_matrix(g.matrix), (size, size),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return normalize(out) if normalize_image else out


def _finish(images: list[np.ndarray], layout: str, dtype: str) -> np.ndarray:
    batch = np.stack(images)
    if layout == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch.astype(np.float16 if dtype == "float16" else np.float32))


def _records(info: SplitInfo, order: np.ndarray | None = None) -> Iterator[shards.Record]:
    tars = info.tars if order is None else [info.tars[i] for i in order]
    for tar in tars:
        try:
            yield from shards.iter_shard(tar)
        except shards.ShardError as e:
            raise PipelineError(str(e)) from None


def train_batches(data, *, batch_size: int, augment: AugmentSpec = AugmentSpec(), input_size: int = 227,
                  seed: int = 0, layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2,
                  split: str | None = None, normalize_image: bool = True, shuffle_buffer: int = 1024
                  ) -> Iterator[dict]:
    """Endless training batches like ``dali.train_batches`` (one rank): the shard order is permuted every
    epoch and records are shuffled in a buffer of ``shuffle_buffer``; crops run on ``num_threads`` threads
    (OpenCV releases the GIL). Yields dicts with ``images``, ``targets`` (B, K, 2), ``weights`` (B, K),
    ``crop_box`` (B, 4) source frame relative to the record's offset, ``pose`` (B, K, 4), ``meta`` (B, 10),
    ``draws`` (B, 7)."""
    info = as_split(data, split, "train")
    rng = np.random.default_rng(seed)
    pool = ThreadPoolExecutor(max(1, num_threads))

    def stream():
        buffer: list[shards.Record] = []
        while True:  # epochs
            for rec in _records(info, rng.permutation(len(info.tars))):
                if len(buffer) < shuffle_buffer:
                    buffer.append(rec)
                    continue
                i = int(rng.integers(len(buffer)))
                yield buffer[i]
                buffer[i] = rec

    records = stream()

    def one(rec: shards.Record, draws: np.ndarray):
        return crop_sample(rec.jpeg, rec.pose, draws, size=input_size, shift=augment.shift, flip_perm=info.flip_perm,
                           normalize_image=normalize_image, scale=rec.meta[shards.META_SCALE],
                           where=f"{info.shard_dir}: record {rec.key:08d} of split {info.split!r}")

    try:
        while True:
            batch = [next(records) for _ in range(batch_size)]
            draws = codec.sample_draws(rng, batch_size, augment)
            results = list(pool.map(one, batch, draws))
            yield {
                "images": _finish([r[0] for r in results], layout, dtype),
                "targets": np.stack([r[1].targets for r in results]),
                "weights": np.stack([r[1].weights for r in results]),
                "crop_box": np.stack([r[1].crop_box for r in results]),
                "pose": np.stack([rec.pose for rec in batch]),
                "meta": np.stack([rec.meta for rec in batch]),
                "draws": draws,
            }
    finally:
        pool.shutdown(wait=False)


def eval_batches(data, *, split: str | None = None, batch_size: int, input_size: int = 227,
                 extension: float = AugmentSpec().test_extension, layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2,
                 normalize_image: bool = True) -> Iterator[dict]:
    """One pass in shard order, like ``dali.eval_batches`` (one rank): same keys, same pixel frames."""
    info = as_split(data, split, "test")
    draws = codec.eval_draws(extension)
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        batch: list[shards.Record] = []
        records = _records(info)
        while True:
            rec = next(records, None)
            if rec is not None:
                batch.append(rec)
            if batch and (len(batch) == batch_size or rec is None):
                results = list(pool.map(lambda r: crop_sample(
                    r.jpeg, r.pose, draws, size=input_size, shift=0.0, flip_perm=info.flip_perm,
                    normalize_image=normalize_image, where=f"{info.shard_dir}: record {r.key:08d}",
                    scale=r.meta[shards.META_SCALE]), batch))
                yield {
                    "images": _finish([im for im, _ in results], layout, dtype),
                    "targets": np.stack([g.targets for _, g in results]),
                    "weights": np.stack([g.weights for _, g in results]),
                    **source_frame_labels(np.stack([r.pose for r in batch]), np.stack([r.meta for r in batch]),
                                          np.stack([g.crop_box for _, g in results])),
                }
                batch = []
            if rec is None:
                return
