"""DALI pipelines: person crops for training (random, augmented) and evaluation (deterministic).

One graph, two backends. Per sample: read ``KEY.jpg``, ``KEY.pose.npy``, ``KEY.meta.npy`` from the tar
shards, peek the JPEG's shape, compute the crop geometry with the native ``PoseCrop`` operator
(csrc/pose_crop, rule in ``deeppose_fast/codec.py``), decode only the region it asks for
(``decoders.image_slice``; ``device="mixed"`` on a GPU host), warp it to S x S with the operator's
src->dst matrix (``warp_affine``, bilinear, border pixels repeated) and normalise each image per channel
(``(x - mean) / sqrt(var + 1)``). The geometry stays on the CPU either way: it is a few hundred flops.

Legend: B batch, S input size, K joints.

- ``train_dataset(...)``: an endless ``tf.data.Dataset`` of ``(images, targets (B, K, 2), weights (B, K))``
  for the train loop; ``train_batches(...)``: the same samples as an iterator of NumPy dicts.
- ``eval_batches(...)``: one pass over a split, every person exactly once, with what maps predictions
  back to source-image pixels (``codec.decode(targets, crop_box)``).
"""
from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from deeppose_fast import codec
from deeppose_fast import skeleton as skeletons
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import native

READER = "Reader"
NORM_EPSILON = 1.0  # added to the per-channel variance (pixel units^2): a flat crop stays finite
LAYOUTS = ("NHWC", "NCHW")
DTYPES = ("float32", "float16")


class PipelineError(RuntimeError):
    """A data set cannot be streamed (missing shard, empty split, corrupt record); the message names the
    folder and what is wrong."""


@dataclass(frozen=True)
class SplitInfo:
    """What the pipeline needs from a prepared folder's manifest."""

    shard_dir: Path
    split: str
    tars: list[str]
    indices: list[str]
    count: int
    num_joints: int
    flip_perm: tuple[int, ...]
    skeleton: str
    rebuild_hint: str = "re-run `deeppose-fast prepare` to rebuild it"  # from the manifest, see split_info


def split_info(shard_dir: str | Path, split: str) -> SplitInfo:
    """Validate a prepared folder's split (shards and indices present and consistent, not empty: see
    ``shards.shard_paths``) and read its layout."""
    shard_dir = Path(shard_dir)
    try:
        manifest = shards.read_manifest(shard_dir)
        tars, idxs = shards.shard_paths(shard_dir, split)
    except shards.ShardError as e:
        raise PipelineError(str(e)) from None
    entry = manifest["splits"][split]
    if int(entry["count"]) == 0 or not tars:
        raise PipelineError(f"{shard_dir}: split {split!r} is empty (0 people); nothing to stream")
    name = manifest.get("skeleton")
    if name in skeletons.SKELETONS:
        skel = skeletons.get(name)
        perm, k = skel.flip_permutation, skel.num_joints
    else:  # a layout this version does not name: fall back to the manifest's own pairs
        k = int(manifest.get("num_joints", 0))
        if k <= 0:
            raise PipelineError(f"{shard_dir / shards.MANIFEST}: neither a known 'skeleton' nor 'num_joints'")
        p = list(range(k))
        for a, b in manifest.get("flip_pairs", []):
            p[a], p[b] = b, a
        perm = tuple(p)
    if int(manifest.get("num_joints", k)) != k:
        raise PipelineError(f"{shard_dir / shards.MANIFEST}: num_joints {manifest['num_joints']} does not "
                            f"match skeleton {name!r} ({k} joints)")
    return SplitInfo(shard_dir, split, [str(t) for t in tars], [str(i) for i in idxs], int(entry["count"]),
                     k, tuple(perm), str(name), shards.rebuild_hint(shard_dir, manifest))


def gpu_available() -> bool:
    """True when DALI sees at least one CUDA device."""
    try:
        from nvidia.dali import backend
        return backend.GetCUDADeviceCount() > 0
    except Exception:  # no driver, no libcuda: DALI raises various errors; all mean "no GPU"
        return False


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"gpu"`` where DALI sees a GPU, else ``"cpu"``; ``"cpu"``/``"gpu"`` pass through."""
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "gpu" and not gpu_available():
        raise PipelineError("device='gpu' was asked for but DALI sees no CUDA device; use device='cpu'")
    return device


def _check_args(batch_size, input_size, layout, dtype):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")


def _uniform(lo: float, hi: float, n: int):
    """(n,) float32 draws from U[lo, hi] (a constant when lo == hi)."""
    from nvidia.dali import fn
    if lo == hi:
        return fn.constant(fdata=[float(lo)] * n, shape=[n])
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    return fn.random.uniform(range=[float(lo), float(hi)], shape=[n])


def _crop(jpegs, pose, draws, *, info: SplitInfo, size: int, shift: float, device: str, layout: str,
          dtype: str, normalize: bool, swap_labels: bool):
    """The shared graph: geometry, region decode, warp, normalisation. Returns the images and the
    operator's other outputs (targets, weights, crop_box)."""
    from nvidia.dali import fn, types

    shape = fn.peek_image_shape(jpegs)
    matrix, anchor, region, targets, weights, crop_box = fn.pose_crop(
        pose, shape, draws, size=size, shift=shift, flip_perm=list(info.flip_perm) if swap_labels else [])
    images = fn.decoders.image_slice(jpegs, anchor, region, device="mixed" if device == "gpu" else "cpu",
                                     normalized_anchor=False, normalized_shape=False,
                                     output_type=types.RGB)
    # float output: 2x faster than uint8 on CPU (STACK.md) and what normalisation wants anyway
    images = fn.warp_affine(images, matrix=matrix, size=[size, size], inverse_map=False,
                            dtype=types.FLOAT, interp_type=types.INTERP_LINEAR)
    if normalize:
        images = fn.normalize(images, axes=[0, 1], epsilon=NORM_EPSILON)
    if layout == "NCHW":
        images = fn.transpose(images, perm=[2, 0, 1])
    if dtype == "float16":
        images = fn.cast(images, dtype=types.FLOAT16)
    return images, targets, weights, crop_box


def _reader(info: SplitInfo, use_mmap: bool = False, **kwargs):
    from nvidia.dali import fn, types
    # Plain reads by default: mapped tar pages count in the process's RSS, so over an epoch of a large
    # data set an mmap reader's RSS grows with the data set (plain reads only fill the page cache).
    jpegs, pose, meta = fn.readers.webdataset(
        paths=info.tars, index_paths=info.indices, ext=["jpg", "pose.npy", "meta.npy"],
        dtypes=[types.UINT8, types.UINT8, types.UINT8], missing_component_behavior="error", name=READER,
        dont_use_mmap=not use_mmap, **kwargs)
    return jpegs, fn.decoders.numpy(pose), fn.decoders.numpy(meta)


def build_train_pipeline(shard_dir, *, batch_size: int, input_size: int = 227, ext_range=(1.5, 2.0),
                         shift: float = 0.1, flip: bool = True, rotation: float = 0.0,
                         scale_jitter: float = 0.0, seed: int = 0, shard_id: int = 0, num_shards: int = 1,
                         device: str = "auto", layout: str = "NHWC", dtype: str = "float32",
                         num_threads: int = 2, split: str = "train", device_id: int | None = None,
                         normalize: bool = True, swap_labels: bool = True, shuffle_buffer: int = 1024,
                         use_mmap: bool = False, extras: bool = False):
    """The training pipeline (not built). Outputs ``images, targets, weights`` and, with ``extras``, also
    ``crop_box (B, 4)`` (JPEG frame), ``pose (B, K, 4)``, ``meta (B, 8)`` and ``draws (B, 7)`` (the random
    draws, ``codec.DRAW_FIELDS``).

    Shuffling: the shard order is reshuffled every epoch (``shuffle_after_epoch``, the same seed on every
    rank so ranks stay disjoint) and samples are shuffled in a buffer of ``shuffle_buffer`` records.
    ``use_mmap`` maps the tar files instead of reading them (see ``_reader``: RSS then grows with the
    data set). ``normalize=False`` keeps raw 0-255 pixels and ``swap_labels=False`` flips without the
    left/right swap: both for inspection and tests only.
    """
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    _check_args(batch_size, input_size, layout, dtype)
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, num_shards={num_shards}), got {shard_id}")
    lo, hi = ext_range
    if lo <= 0:
        raise ValueError(f"ext_range must be positive, got {ext_range}")
    info = split_info(shard_dir, split)
    device = resolve_device(device)
    native.load()
    pipe = Pipeline(batch_size=batch_size, num_threads=num_threads,
                    device_id=(0 if device_id is None else device_id) if device == "gpu" else None,
                    seed=int(seed) * 7919 + shard_id, prefetch_queue_depth=2)
    with pipe:
        jpegs, pose, meta = _reader(info, use_mmap=use_mmap, random_shuffle=True,
                                    initial_fill=max(1, shuffle_buffer),
                                    shuffle_after_epoch=True, shuffle_after_epoch_seed=int(seed),
                                    shard_id=shard_id, num_shards=num_shards)
        flips = (fn.cast(fn.random.coin_flip(probability=0.5, shape=[1]), dtype=types.FLOAT) if flip
                 else fn.constant(fdata=[0.0], shape=[1]))
        draws = fn.cat(_uniform(lo, hi, 2), _uniform(-1.0, 1.0, 2) if shift > 0 else _uniform(0, 0, 2),
                       flips, _uniform(-rotation, rotation, 1), _uniform(1 - scale_jitter, 1 + scale_jitter, 1))
        images, targets, weights, crop_box = _crop(
            jpegs, pose, draws, info=info, size=input_size, shift=shift, device=device, layout=layout,
            dtype=dtype, normalize=normalize, swap_labels=swap_labels)
        outputs = (images, targets, weights) + ((crop_box, pose, meta, draws) if extras else ())
        pipe.set_outputs(*outputs)
    pipe.deeppose_info = info  # for callers that need K or the count
    return pipe


def _to_numpy(tl) -> np.ndarray:
    if hasattr(tl, "as_cpu"):
        tl = tl.as_cpu()
    return tl.as_array()


def _dali_reason(error: Exception) -> str:
    """The useful part of a DALI error: which operator failed and why (no traceback, no repeats)."""
    text = " ".join(str(error).split())
    op = re.search(r"Error in \w+ operator `(?:nvidia\.dali\.fn\.)?([^`]+)`", text)
    why = re.search(r"encountered:(.*?)(?:C\+\+ context:|Current pipeline object|$)", text)
    if op and why:
        return f"{op.group(1)}: {why.group(1).strip()}"
    return text[:1000]


@functools.cache
def _cpu_decoder():
    """nvImageCodec's CPU decoder: the library DALI's decoders use (a dependency of the nvidia-dali wheel),
    so it rejects what they reject. OpenCV would not do: libjpeg accepts JPEGs with stray bytes between
    segments that nvImageCodec's parser refuses."""
    from nvidia import nvimgcodec

    return nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=1,
                              backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])


def _undecodable(jpegs: list[bytes]) -> list[bool]:
    """Which of ``jpegs`` DALI's decoders cannot decode."""
    from nvidia import nvimgcodec

    return [image is None for image in _cpu_decoder().decode([nvimgcodec.CodeStream(j) for j in jpegs])]


def _find_bad_jpeg(info: SplitInfo, chunk: int = 64) -> str | None:
    """The first record of a split whose JPEG does not decode, as ``record KEY in SHARD.tar`` (a full
    scan, ``chunk`` records at a time: only after a failure)."""
    for tar in info.tars:
        records = shards.iter_shard(tar)
        while part := list(itertools.islice(records, chunk)):
            for rec, bad in zip(part, _undecodable([r.jpeg for r in part])):
                if bad:
                    return f"record {rec.key:08d} in {Path(tar).name}: its JPEG does not decode"
    return None


def _reading_error(error: Exception, info: SplitInfo, action: str = "reading") -> PipelineError:
    """One line for DALI's failure on ``info``'s split: a shard missing or truncated since the pipeline
    started (``shards.check_shard``'s message), or the folder, the record whose JPEG does not decode
    (when an image operator failed), DALI's reason and what rebuilds the data."""
    reason = _dali_reason(error)
    try:
        for tar in info.tars:
            shards.check_shard(tar, hint=info.rebuild_hint)
        record = _find_bad_jpeg(info) if re.search(r"image|decoders", reason.split(":")[0]) else None
    except shards.ShardError as e:
        return PipelineError(str(e))
    where = f"{info.shard_dir}: {action} split {info.split!r} failed"
    if record is None:
        return PipelineError(f"{where}: {reason}; if the shards are damaged, {info.rebuild_hint}")
    return PipelineError(f"{where}: {record} ({reason}); {info.rebuild_hint}")


def _run(pipe, info: SplitInfo):
    """``pipe.run()`` with DALI's errors turned into a PipelineError naming the data set and, where it
    can be found, the shard or record at fault."""
    try:
        return pipe.run()
    except RuntimeError as e:
        raise _reading_error(e, info) from None


def _build(pipe, info: SplitInfo):
    try:
        pipe.build()
    except RuntimeError as e:
        raise _reading_error(e, info, action="building the pipeline for") from None


def train_batches(shard_dir, *, batch_size: int, **kwargs) -> Iterator[dict]:
    """Endless iterator of training batches as NumPy dicts: ``images`` (B, S, S, 3) or (B, 3, S, S),
    ``targets`` (B, K, 2), ``weights`` (B, K), ``crop_box`` (B, 4) JPEG frame, ``pose`` (B, K, 4),
    ``meta`` (B, 8), ``draws`` (B, 7). Keyword arguments as ``build_train_pipeline``."""
    kwargs["extras"] = True
    pipe = build_train_pipeline(shard_dir, batch_size=batch_size, **kwargs)
    info = pipe.deeppose_info
    _build(pipe, info)
    names = ("images", "targets", "weights", "crop_box", "pose", "meta", "draws")
    while True:
        yield {n: _to_numpy(o) for n, o in zip(names, _run(pipe, info))}


def train_dataset(shard_dir, *, batch_size: int, input_size: int = 227, ext_range=(1.5, 2.0),
                  shift: float = 0.1, flip: bool = True, rotation: float = 0.0, scale_jitter: float = 0.0,
                  seed: int = 0, shard_id: int = 0, num_shards: int = 1, device: str = "auto",
                  layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2, **kwargs):
    """Endless ``tf.data.Dataset`` of ``(images (B, S, S, 3) or (B, 3, S, S), targets (B, K, 2) in
    [-0.5, 0.5], weights (B, K))``, reshuffled per epoch, rank ``shard_id`` of ``num_shards``.
    Extra keyword arguments go to ``build_train_pipeline`` (e.g. ``device_id``, ``shuffle_buffer``).

    Iterating the dataset itself (``iter(ds)``, ``for batch in ds``) raises ``PipelineError`` naming the
    shard or record at fault when DALI fails (a truncated shard, a JPEG that does not decode); datasets
    derived from it (``ds.take(n)``...) raise TensorFlow's own error instead."""
    import tensorflow as tf

    pipe = build_train_pipeline(
        shard_dir, batch_size=batch_size, input_size=input_size, ext_range=ext_range, shift=shift, flip=flip,
        rotation=rotation, scale_jitter=scale_jitter, seed=seed, shard_id=shard_id, num_shards=num_shards,
        device=device, layout=layout, dtype=dtype, num_threads=num_threads, **kwargs)
    info = pipe.deeppose_info
    s, k = input_size, info.num_joints
    image_shape = (batch_size, s, s, 3) if layout == "NHWC" else (batch_size, 3, s, s)
    gpu = pipe.device_id is not None
    with tf.device(f"/gpu:{pipe.device_id}" if gpu else "/cpu:0"):
        return _reporting_dataset_class()(
            info, pipeline=pipe, batch_size=batch_size,
            output_shapes=(image_shape, (batch_size, k, 2), (batch_size, k)),
            output_dtypes=(tf.float16 if dtype == "float16" else tf.float32, tf.float32, tf.float32),
            device_id=pipe.device_id)


@functools.cache
def _reporting_dataset_class():
    """``DALIDataset`` whose Python iterator reports DALI's failures as ``PipelineError`` (made on first
    use: it needs TensorFlow and the DALI plugin)."""
    import contextlib

    import tensorflow as tf
    from nvidia.dali.plugin.tf import DALIDataset

    @contextlib.contextmanager
    def reported(info: SplitInfo):
        """TensorFlow errors raised by DALI become ``_reading_error``s: the train loop then names the
        shard or record instead of printing DALI's C++ context."""
        try:
            yield
        except tf.errors.OpError as e:
            if "DALI" not in str(e):  # not the input pipeline (e.g. out of memory): leave it alone
                raise
            raise _reading_error(e, info) from None

    class Iterator:
        def __init__(self, iterator, info: SplitInfo):
            self._iterator, self._info = iterator, info

        def __iter__(self):
            return self

        def __next__(self):
            with reported(self._info):
                return next(self._iterator)

    class ReportingDALIDataset(DALIDataset):
        """``DALIDataset(**kwargs)`` for the split ``info``; see ``train_dataset``."""

        def __init__(self, info: SplitInfo, **kwargs):
            super().__init__(**kwargs)
            self._deeppose_info = info

        def __iter__(self):
            with reported(self._deeppose_info):
                return Iterator(super().__iter__(), self._deeppose_info)

    return ReportingDALIDataset


def shard_range(count: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """``[start, end)`` of the records DALI's readers give shard ``shard_id`` of ``num_shards``."""
    return count * shard_id // num_shards, count * (shard_id + 1) // num_shards


def source_frame_labels(pose: np.ndarray, meta: np.ndarray, crop_box: np.ndarray) -> dict:
    """The evaluation labels of a batch in source-image pixels (shards store the pre-crop's frame).

    Args:
        pose: (B, K, 4) shard poses ``x, y, annotated, visible`` in the JPEG's frame.
        meta: (B, 8) shard meta: head box, pre-crop offset, person index, image id.
        crop_box: (B, 4) ``x0, y0, w, h`` of the crop in the JPEG's frame.
    Returns:
        dict of ``crop_box`` (B, 4), ``joints`` (B, K, 2) NaN = not annotated, ``visible`` (B, K),
        ``head_box`` (B, 4), ``person_index`` (B,), ``image_id`` (B,), all in source-image pixels.
    """
    pose, meta = np.asarray(pose, np.float64), np.asarray(meta, np.float64)
    offset = meta[:, 4:6]
    annotated = pose[:, :, 2] > 0.5
    box = np.array(crop_box, dtype=np.float64)
    box[:, :2] += offset
    return {
        "crop_box": box,
        "joints": np.where(annotated[..., None], pose[:, :, :2] + offset[:, None, :], np.nan),
        "visible": annotated & (pose[:, :, 3] > 0.5),
        "head_box": meta[:, :4] + np.concatenate([offset, offset], axis=1),
        "person_index": meta[:, 6].astype(np.int64),
        "image_id": meta[:, 7].astype(np.int64),
    }


def eval_batches(shard_dir, *, split: str = "test", batch_size: int, input_size: int = 227,
                 extension: float = 2.0, shard_id: int = 0, num_shards: int = 1, device: str = "auto",
                 layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2,
                 device_id: int | None = None, normalize: bool = True) -> Iterator[dict]:
    """One pass over a split (this rank's part of it), every person exactly once, in shard order.

    Yields dicts of NumPy arrays (the last batch may be smaller):
        ``images`` (B, S, S, 3) or (B, 3, S, S); ``targets`` (B, K, 2) and ``weights`` (B, K) of the
        ground truth in the crop frame; ``crop_box`` (B, 4) x0, y0, w, h in source-image pixels;
        ``joints`` (B, K, 2) source-image pixels, NaN where not annotated; ``visible`` (B, K) bool;
        ``head_box`` (B, 4) x1, y1, x2, y2 source-image pixels (NaN if none); ``person_index`` (B,)
        int64; ``image_id`` (B,) int64.
    ``codec.decode(predictions, batch["crop_box"])`` maps network outputs to source-image pixels.
    """
    from nvidia.dali.pipeline import Pipeline
    from nvidia.dali import fn

    _check_args(batch_size, input_size, layout, dtype)
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, num_shards={num_shards}), got {shard_id}")
    if extension <= 0:
        raise ValueError(f"extension must be positive, got {extension}")
    info = split_info(shard_dir, split)
    device = resolve_device(device)
    native.load()
    start, end = shard_range(info.count, shard_id, num_shards)
    size = end - start
    if size == 0:
        return
    pipe = Pipeline(batch_size=batch_size, num_threads=num_threads,
                    device_id=(0 if device_id is None else device_id) if device == "gpu" else None,
                    seed=0, prefetch_queue_depth=1)
    with pipe:
        jpegs, pose, meta = _reader(info, random_shuffle=False, shard_id=shard_id, num_shards=num_shards,
                                    stick_to_shard=True, pad_last_batch=True)
        draws = fn.constant(fdata=[float(v) for v in codec.eval_draws(extension)], shape=[codec.NUM_DRAWS])
        images, targets, weights, crop_box = _crop(
            jpegs, pose, draws, info=info, size=input_size, shift=0.0, device=device, layout=layout,
            dtype=dtype, normalize=normalize, swap_labels=True)
        pipe.set_outputs(images, targets, weights, crop_box, pose, meta)
    _build(pipe, info)
    seen = pipe.reader_meta(READER)["epoch_size"]
    if seen != info.count:
        raise PipelineError(f"{info.shard_dir}: split {split!r}: the shards hold {seen} records but "
                            f"manifest.json says {info.count}; re-run `deeppose-fast prepare`")
    for b in range(math.ceil(size / batch_size)):
        images, targets, weights, crop_box, pose, meta = (_to_numpy(o) for o in _run(pipe, info))
        keep = min(batch_size, size - b * batch_size)  # drop the reader's padding of the last batch
        yield {"images": images[:keep], "targets": targets[:keep], "weights": weights[:keep],
               **source_frame_labels(pose[:keep], meta[:keep], crop_box[:keep])}
