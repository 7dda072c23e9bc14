"""DALI pipelines: person crops for training (random, augmented) and evaluation (deterministic).

One graph, two backends. Per sample: read ``KEY.jpg``, ``KEY.pose.npy``, ``KEY.meta.npy`` from the tar
shards, peek the JPEG's shape, compute the crop geometry with the native ``PoseCrop`` operator
(csrc/pose_crop, rule in ``deeppose_fast/codec.py``), decode only the region it asks for
(``decoders.image_slice``; ``device="mixed"`` on a GPU host), warp it to S x S with the operator's
src->dst matrix (``warp_affine``, bilinear, border pixels repeated) and normalise each image per channel
(``contract.standardize``: ``fn.normalize`` with ``contract.NORM_EPSILON``). The geometry stays on the
CPU either way: it is a few hundred flops. The graphs are ``@pipeline_def`` functions (``train_graph``,
``eval_graph``); what both loaders share (splits, errors, labels, normalisation, devices) is in
``contract``.

Legend: B batch, S input size, K joints.

- ``train_dataset(...)``: an endless ``tf.data.Dataset`` of ``(images, targets (B, K, 2), weights (B, K))``
  for the train loop; ``train_batches(...)``: the same samples as an iterator of NumPy dicts.
- ``eval_batches(...)``: one pass over a split, every person exactly once, with what maps predictions
  back to source-image pixels (``codec.decode(targets, crop_box)``).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator

import numpy as np
# DALI at import: this module is the DALI loader (``contract``, which command lines read, loads none)
from nvidia.dali import fn, pipeline_def, types

from deeppose_fast import codec
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import native
from deeppose_fast.pipeline.contract import (NORM_EPSILON, PipelineError, SplitInfo, as_split, resolve_device,
                                             shard_range, source_frame_labels)
from deeppose_fast.pipeline.failures import reading_error
from deeppose_fast.specs import AugmentSpec

READER = "Reader"
LAYOUTS = ("NHWC", "NCHW")
DTYPES = ("float32", "float16")
TRAIN_OUTPUTS = ("images", "targets", "weights", "crop_box", "pose", "meta", "draws")


def _check_args(batch_size, input_size, layout, dtype, shard_id, num_shards):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, num_shards={num_shards}), got {shard_id}")


def _uniform(lo: float, hi: float, n: int):
    """(n,) float32 draws from U[lo, hi] (a constant when lo == hi)."""
    if lo == hi:
        return fn.constant(fdata=[float(lo)] * n, shape=[n])
    return fn.random.uniform(range=[float(lo), float(hi)], shape=[n])


def _train_draws(augment: AugmentSpec):
    """(7,) random draws per sample (``codec.DRAW_FIELDS``), the laws of ``codec.sample_draws``. The
    random operators are made in a fixed order (flip, extension, shift, rotation, scale): DALI seeds
    them in that order, so a seed gives the same crops."""
    flips = (fn.cast(fn.random.coin_flip(probability=0.5, shape=[1]), dtype=types.FLOAT) if augment.flip
             else fn.constant(fdata=[0.0], shape=[1]))
    return fn.cat(_uniform(augment.ext_min, augment.ext_max, 2),
                  _uniform(-1.0, 1.0, 2) if augment.shift > 0 else _uniform(0, 0, 2), flips,
                  _uniform(-augment.rotation, augment.rotation, 1),
                  _uniform(1 - augment.scale_jitter, 1 + augment.scale_jitter, 1))


def _crop(jpegs, pose, meta, draws, *, info: SplitInfo, size: int, shift: float, device: str, layout: str,
          dtype: str, normalize: bool, swap_labels: bool):
    """The shared graph: geometry, region decode, warp, normalisation. Returns the images and the
    operator's other outputs (targets, weights, crop_box)."""
    shape = fn.peek_image_shape(jpegs)
    scale = meta[shards.META_SCALE.start:shards.META_SCALE.stop]  # of a region stored at reduced resolution
    matrix, anchor, region, targets, weights, crop_box = fn.pose_crop(
        pose, shape, draws, scale, size=size, shift=shift, flip_perm=list(info.flip_perm) if swap_labels else [])
    images = fn.decoders.image_slice(jpegs, anchor, region, device="mixed" if device == "gpu" else "cpu",
                                     normalized_anchor=False, normalized_shape=False,
                                     output_type=types.RGB)
    # float output: 2x faster than uint8 on CPU (STACK.md) and what normalisation wants anyway
    images = fn.warp_affine(images, matrix=matrix, size=[size, size], inverse_map=False,
                            dtype=types.FLOAT, interp_type=types.INTERP_LINEAR)
    if normalize:
        images = fn.normalize(images, axes=[0, 1], epsilon=NORM_EPSILON)  # contract.standardize
    if layout == "NCHW":
        images = fn.transpose(images, perm=[2, 0, 1])
    if dtype == "float16":
        images = fn.cast(images, dtype=types.FLOAT16)
    return images, targets, weights, crop_box


def _reader(info: SplitInfo, use_mmap: bool = False, **kwargs):
    # Plain reads by default: mapped tar pages count in the process's RSS, so over an epoch of a large
    # data set an mmap reader's RSS grows with the data set (plain reads only fill the page cache).
    jpegs, pose, meta = fn.readers.webdataset(
        paths=info.tars, index_paths=info.indices, ext=["jpg", "pose.npy", "meta.npy"],
        dtypes=[types.UINT8, types.UINT8, types.UINT8], missing_component_behavior="error", name=READER,
        dont_use_mmap=not use_mmap, **kwargs)
    return jpegs, fn.decoders.numpy(pose), fn.decoders.numpy(meta)


@pipeline_def
def train_graph(info: SplitInfo, augment: AugmentSpec, *, size: int, device: str, layout: str, dtype: str,
                shuffle_seed: int, shard_id: int, num_shards: int, shuffle_buffer: int, use_mmap: bool,
                normalize: bool, swap_labels: bool, extras: bool):
    """The training graph of split ``info`` (pipeline arguments such as ``batch_size`` as DALI's). Outputs
    ``images, targets, weights`` and, with ``extras``, ``crop_box, pose, meta, draws`` (``TRAIN_OUTPUTS``).
    See ``build_train_pipeline``."""
    jpegs, pose, meta = _reader(info, use_mmap=use_mmap, random_shuffle=True, initial_fill=max(1, shuffle_buffer),
                                shuffle_after_epoch=True, shuffle_after_epoch_seed=shuffle_seed,
                                shard_id=shard_id, num_shards=num_shards)
    draws = _train_draws(augment)
    images, targets, weights, crop_box = _crop(
        jpegs, pose, meta, draws, info=info, size=size, shift=augment.shift, device=device, layout=layout,
        dtype=dtype, normalize=normalize, swap_labels=swap_labels)
    return (images, targets, weights) + ((crop_box, pose, meta, draws) if extras else ())


@pipeline_def
def eval_graph(info: SplitInfo, *, extension: float, size: int, device: str, layout: str, dtype: str,
               shard_id: int, num_shards: int, normalize: bool):
    """The evaluation graph: this rank's records in shard order, the last batch padded by the reader.
    Outputs ``images, targets, weights, crop_box, pose, meta``."""
    jpegs, pose, meta = _reader(info, random_shuffle=False, shard_id=shard_id, num_shards=num_shards,
                                stick_to_shard=True, pad_last_batch=True)
    draws = fn.constant(fdata=[float(v) for v in codec.eval_draws(extension)], shape=[codec.NUM_DRAWS])
    images, targets, weights, crop_box = _crop(
        jpegs, pose, meta, draws, info=info, size=size, shift=0.0, device=device, layout=layout, dtype=dtype,
        normalize=normalize, swap_labels=True)
    return images, targets, weights, crop_box, pose, meta


def _device_id(device: str, device_id: int | None) -> int | None:
    """DALI's ``device_id``: None runs CPU operators only."""
    return (0 if device_id is None else device_id) if device == "gpu" else None


def build_train_pipeline(data, *, batch_size: int, augment: AugmentSpec = AugmentSpec(), input_size: int = 227,
                         seed: int = 0, shard_id: int = 0, num_shards: int = 1, device: str = "auto",
                         layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2,
                         split: str | None = None, device_id: int | None = None, normalize: bool = True,
                         swap_labels: bool = True, shuffle_buffer: int = 1024, use_mmap: bool = False,
                         extras: bool = False):
    """The training pipeline (a DALI ``Pipeline``, not built) of a prepared folder's ``split`` (default
    ``train``) or of a ``SplitInfo`` already read (``data``).

    ``augment`` is the crop recipe (random extension, shift, flip, rotation, scale); S = ``input_size``;
    this rank reads part ``shard_id`` of ``num_shards``; ``device`` is ``auto``, ``cpu`` or ``gpu``
    (``contract.resolve_device``), on GPU ``device_id``. Outputs ``images, targets, weights`` and, with
    ``extras``, also ``crop_box (B, 4)`` (source frame, relative to the offset), ``pose (B, K, 4)``, ``meta (B, 10)`` and
    ``draws (B, 7)`` (the random draws, ``codec.DRAW_FIELDS``).

    Shuffling: the shard order is reshuffled every epoch (``shuffle_after_epoch``, the same seed on every
    rank so ranks stay disjoint) and samples are shuffled in a buffer of ``shuffle_buffer`` records.
    ``use_mmap`` maps the tar files instead of reading them (see ``_reader``: RSS then grows with the
    data set). ``normalize=False`` keeps raw 0-255 pixels and ``swap_labels=False`` flips without the
    left/right swap: both for inspection and tests only.
    """
    info = as_split(data, split, "train")
    _check_args(batch_size, input_size, layout, dtype, shard_id, num_shards)
    device = resolve_device(device)
    native.load()
    return train_graph(info, augment, size=input_size, device=device, layout=layout, dtype=dtype,
                       shuffle_seed=int(seed), shard_id=shard_id, num_shards=num_shards,
                       shuffle_buffer=shuffle_buffer, use_mmap=use_mmap, normalize=normalize,
                       swap_labels=swap_labels, extras=extras,
                       batch_size=batch_size, num_threads=num_threads, device_id=_device_id(device, device_id),
                       seed=int(seed) * 7919 + shard_id, prefetch_queue_depth=2)


def to_numpy(tl) -> np.ndarray:
    """A DALI TensorList (CPU or GPU) as one NumPy array."""
    if hasattr(tl, "as_cpu"):
        tl = tl.as_cpu()
    return tl.as_array()


def _run(pipe, info: SplitInfo):
    """``pipe.run()`` with DALI's errors turned into a PipelineError naming the data set and, where it
    can be found, the shard or record at fault."""
    try:
        return pipe.run()
    except RuntimeError as e:
        raise reading_error(e, info) from None


def _build(pipe, info: SplitInfo):
    try:
        pipe.build()
    except RuntimeError as e:
        raise reading_error(e, info, action="building the pipeline for") from None


def train_batches(data, *, split: str | None = None, **kwargs) -> Iterator[dict]:
    """Endless iterator of training batches as NumPy dicts (``TRAIN_OUTPUTS``): ``images`` (B, S, S, 3)
    or (B, 3, S, S), ``targets`` (B, K, 2), ``weights`` (B, K), ``crop_box`` (B, 4) source frame (relative to the offset), ``pose``
    (B, K, 4), ``meta`` (B, 10), ``draws`` (B, 7). Arguments as ``build_train_pipeline``."""
    info = as_split(data, split, "train")
    pipe = build_train_pipeline(info, extras=True, **kwargs)
    _build(pipe, info)
    while True:
        yield {n: to_numpy(o) for n, o in zip(TRAIN_OUTPUTS, _run(pipe, info))}


def train_dataset(data, *, batch_size: int, input_size: int = 227, layout: str = "NHWC",
                  dtype: str = "float32", split: str | None = None, **kwargs):
    """Endless ``tf.data.Dataset`` of ``(images (B, S, S, 3) or (B, 3, S, S), targets (B, K, 2) in
    [-0.5, 0.5], weights (B, K))``, reshuffled per epoch. ``data``, ``split`` and the other keyword
    arguments as ``build_train_pipeline`` (``augment``, ``seed``, ``shard_id``, ``num_shards``, ``device``...).

    Iterating the dataset itself (``iter(ds)``, ``for batch in ds``) raises ``PipelineError`` naming the
    shard or record at fault when DALI fails (a truncated shard, a JPEG that does not decode); datasets
    derived from it (``ds.take(n)``...) raise TensorFlow's own error instead."""
    import tensorflow as tf  # late: only the train loop needs tf.data

    info = as_split(data, split, "train")
    pipe = build_train_pipeline(info, batch_size=batch_size, input_size=input_size, layout=layout, dtype=dtype,
                                **kwargs)
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
    import tensorflow as tf  # late, with the DALI plugin that loads it: only the train loop needs them
    from nvidia.dali.plugin.tf import DALIDataset

    @contextlib.contextmanager
    def reported(info: SplitInfo):
        """TensorFlow errors raised by DALI become ``reading_error``s: the train loop then names the
        shard or record instead of printing DALI's C++ context."""
        try:
            yield
        except tf.errors.OpError as e:
            if "DALI" not in str(e):  # not the input pipeline (e.g. out of memory): leave it alone
                raise
            raise reading_error(e, info) from None

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
            self._split_info = info

        def __iter__(self):
            with reported(self._split_info):
                return Iterator(super().__iter__(), self._split_info)

    return ReportingDALIDataset


def eval_batches(data, *, split: str | None = None, batch_size: int, input_size: int = 227,
                 extension: float = AugmentSpec().test_extension, shard_id: int = 0, num_shards: int = 1, device: str = "auto",
                 layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2,
                 device_id: int | None = None, normalize: bool = True) -> Iterator[dict]:
    """One pass over a split (this rank's part of it), every person exactly once, in shard order: a prepared
    folder's ``split`` (default ``test``) or a ``SplitInfo`` already read (``data``; a sweep over test
    extensions then reads the manifest once).

    Yields dicts of NumPy arrays (the last batch may be smaller):
        ``images`` (B, S, S, 3) or (B, 3, S, S); ``targets`` (B, K, 2) and ``weights`` (B, K) of the
        ground truth in the crop frame; ``crop_box`` (B, 4) x0, y0, w, h in source-image pixels;
        ``joints`` (B, K, 2) source-image pixels, NaN where not annotated; ``visible`` (B, K) bool;
        ``head_box`` (B, 4) x1, y1, x2, y2 source-image pixels (NaN if none); ``person_index`` (B,)
        int64; ``image_id`` (B,) int64.
    ``codec.decode(predictions, batch["crop_box"])`` maps network outputs to source-image pixels.
    """
    _check_args(batch_size, input_size, layout, dtype, shard_id, num_shards)
    if extension <= 0:
        raise ValueError(f"extension must be positive, got {extension}")
    info = as_split(data, split, "test")
    device = resolve_device(device)
    native.load()
    start, end = shard_range(info.count, shard_id, num_shards)
    size = end - start
    if size == 0:
        return
    pipe = eval_graph(info, extension=extension, size=input_size, device=device, layout=layout, dtype=dtype,
                      shard_id=shard_id, num_shards=num_shards, normalize=normalize,
                      batch_size=batch_size, num_threads=num_threads, device_id=_device_id(device, device_id),
                      seed=0, prefetch_queue_depth=1)
    _build(pipe, info)
    seen = pipe.reader_meta(READER)["epoch_size"]
    if seen != info.count:
        raise PipelineError(f"{info.shard_dir}: split {info.split!r}: the shards hold {seen} records but "
                            f"manifest.json says {info.count}; re-run `deeppose-fast prepare`")
    for b in range(math.ceil(size / batch_size)):
        images, targets, weights, crop_box, pose, meta = (to_numpy(o) for o in _run(pipe, info))
        keep = min(batch_size, size - b * batch_size)  # drop the reader's padding of the last batch
        yield {"images": images[:keep], "targets": targets[:keep], "weights": weights[:keep],
               **source_frame_labels(pose[:keep], meta[:keep], crop_box[:keep])}
