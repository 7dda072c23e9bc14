"""DALI pipelines: person crops for training (random, augmented) and evaluation (deterministic).

One graph, two backends. Per sample: read ``KEY.jpg``, ``KEY.pose.npy``, ``KEY.meta.npy`` from the tar
shards, peek the JPEG's shape, compute the crop geometry with the native ``PoseCrop`` operator
(csrc/pose_crop, rule in ``deeppose_fast/codec.py``; in the source frame of a region stored at reduced
resolution, whose scale the record's meta carries), decode, warp to S x S with the operator's src->dst
matrix (``warp_affine``, bilinear, border pixels repeated) and normalise each image per channel
(``contract.standardize``: ``fn.normalize`` with ``contract.NORM_EPSILON``). The geometry stays on the
CPU either way: it is a few hundred flops.

Decoding (``decode``): ``"region"`` decodes only the region the geometry asks for
(``decoders.image_slice``), ``"whole"`` decodes the stored region whole (``decoders.image``) and the warp
cuts the crop. The GPU path always decodes whole, with ``jpeg_fancy_upsampling`` (the CPU decoder's
chroma upsampling): nvImageCodec 0.9.0, which DALI 2.4 requires, fails on GPU JPEG region decoding of
ordinary in-bounds regions (NVIDIA/nvImageCodec#55), and the stored regions are small. There the
decoded regions can stay in GPU memory for the run (``cache_mb``: DALI's decoder cache, keyed by each
record's tar offset; ``DecodeCache`` keeps it alive across pipelines): each region is then decoded once
and cropped and augmented from GPU memory every epoch. The CPU path's default is ``CPU_DECODE``, chosen
by measurement (README, "Input at real scale"). The graphs are ``@pipeline_def`` functions (``train_graph``,
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
from pathlib import Path
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
DECODES = ("region", "whole")
CPU_DECODE = "region"  # measured on the realistic preset: README "Input at real scale"
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


def _decoder_args(device: str, cache_mb: int) -> dict:
    """The JPEG decoder's arguments: on the GPU the CPU decoder's chroma upsampling and, with
    ``cache_mb``, DALI's decoder cache (every image cached until it is full)."""
    if device != "gpu":
        return {"device": "cpu", "output_type": types.RGB}
    args = {"device": "mixed", "output_type": types.RGB, "jpeg_fancy_upsampling": True}
    if cache_mb > 0:
        args.update(cache_size=int(cache_mb), cache_type="threshold", cache_threshold=0)
    return args


def resolve_decode(decode: str, device: str) -> str:
    """``"auto"`` -> ``"whole"`` on the GPU (nvImageCodec#55: GPU region decoding fails), ``CPU_DECODE``
    on the CPU; ``"region"`` on the GPU is refused for the same reason."""
    if decode == "auto":
        return "whole" if device == "gpu" else CPU_DECODE
    if decode not in DECODES:
        raise ValueError(f"decode must be 'auto', 'region' or 'whole', got {decode!r}")
    if decode == "region" and device == "gpu":
        raise ValueError("decode='region' on the GPU hits nvImageCodec 0.9's region-decoding failure "
                         "(NVIDIA/nvImageCodec#55); use decode='whole' (the default there)")
    return decode


def decode_cache_plan(data_dir, manifest: shards.Manifest, split: str, budget_gb: float,
                      device: str = "auto") -> tuple[int, str | None]:
    """``(cache_mb, note)``: the GPU decoder cache for ``split`` of the data set in ``data_dir`` under a
    budget of ``budget_gb`` (the split's decoded size comes from its ``manifest``, ``decoded_bytes``), and a
    line for the log saying whether every region is decoded once. ``(0, None)`` on the CPU or with a
    budget of 0."""
    if budget_gb <= 0 or resolve_device(device) != "gpu":
        return 0, None
    entry = manifest.splits.get(split, {})
    decoded = entry.get("decoded_bytes") if isinstance(entry, dict) else None
    if not decoded:
        return 0, (f"decode cache: off: {Path(data_dir) / shards.MANIFEST} does not record the decoded size "
                   f"of split {split!r}; {shards.rebuild_hint(data_dir, manifest)}")
    cache_mb, fits = cache_size(decoded, budget_gb)
    size = f"the {split} split's regions take {decoded / 2 ** 30:.2f} GB decoded"
    if fits:
        return cache_mb, f"decode cache: {size}; all kept on the GPU ({cache_mb} MB): each is decoded once"
    return cache_mb, (f"decode cache: {size}, more than --decode-cache-gb {budget_gb:g}: {cache_mb} MB of them "
                      f"stay on the GPU, the rest are decoded every epoch")


def cache_size(decoded_bytes: int, budget_gb: float) -> tuple[int, bool]:
    """``(cache MB, whether every decoded region fits)``: the decoded size plus 5 % and 16 MB for the
    cache's own bookkeeping, or the whole budget when that is more than the budget."""
    need_mb = math.ceil(decoded_bytes * 1.05 / 2 ** 20) + 16
    budget_mb = int(budget_gb * 1024)
    return (need_mb, True) if need_mb <= budget_mb else (budget_mb, False)


class DecodeCache:
    """Keeps DALI's GPU decoder cache of ``cache_mb`` alive for a run. DALI holds a decoder cache only
    while a decoder uses it (one per device, weakly referenced), and training builds a new pipeline per
    data segment: a one-operator pipeline with the same cache settings, built and never run, holds it."""

    def __init__(self, cache_mb: int, device_id: int | None = None):
        @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device_id is None else device_id)
        def holder():
            return fn.decoders.image(fn.external_source(name="jpegs"), **_decoder_args("gpu", cache_mb))

        self._pipe = holder()
        self._pipe.build()


def _crop(jpegs, pose, meta, draws, *, info: SplitInfo, size: int, shift: float, device: str, layout: str,
          dtype: str, normalize: bool, swap_labels: bool, decode: str = CPU_DECODE, cache_mb: int = 0):
    """The shared graph: geometry, decode (``decode``: the region or the whole JPEG), warp, normalisation.
    Returns the images and the operator's other outputs (targets, weights, crop_box)."""
    shape = fn.peek_image_shape(jpegs)
    scale = meta[shards.META_SCALE.start:shards.META_SCALE.stop]  # of a region stored at reduced resolution
    matrix, anchor, region, targets, weights, crop_box = fn.pose_crop(
        pose, shape, draws, scale, size=size, shift=shift, flip_perm=list(info.flip_perm) if swap_labels else [],
        region_relative=decode != "whole")
    images = cut(jpegs, matrix, anchor, region, size=size, device=device, layout=layout, dtype=dtype,
                 normalize=normalize, decode=decode, cache_mb=cache_mb)
    return images, targets, weights, crop_box


def cut(jpegs, matrix, anchor, region, *, size: int, device: str, layout: str, dtype: str, normalize: bool,
        decode: str = CPU_DECODE, cache_mb: int = 0):
    """Decode (the ``region`` at ``anchor``, or the whole JPEG with ``decode="whole"``), warp to S x S with
    a geometry operator's ``matrix`` (``PoseCrop``, ``JointCrop``; made with ``region_relative`` equal to
    ``decode != "whole"``), normalise, lay out and cast: every crop's pixels, whatever its geometry."""
    if decode == "whole":
        images = fn.decoders.image(jpegs, **_decoder_args(device, cache_mb))
    else:
        images = fn.decoders.image_slice(jpegs, anchor, region, normalized_anchor=False, normalized_shape=False,
                                         **_decoder_args(device, 0))
    # float output: 2x faster than uint8 on CPU (STACK.md) and what normalisation wants anyway
    images = fn.warp_affine(images, matrix=matrix, size=[size, size], inverse_map=False,
                            dtype=types.FLOAT, interp_type=types.INTERP_LINEAR)
    if normalize:
        images = fn.normalize(images, axes=[0, 1], epsilon=NORM_EPSILON)  # contract.standardize
    if layout == "NCHW":
        images = fn.transpose(images, perm=[2, 0, 1])
    if dtype == "float16":
        images = fn.cast(images, dtype=types.FLOAT16)
    return images


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
                normalize: bool, swap_labels: bool, extras: bool, decode: str, cache_mb: int):
    """The training graph of split ``info`` (pipeline arguments such as ``batch_size`` as DALI's). Outputs
    ``images, targets, weights`` and, with ``extras``, ``crop_box, pose, meta, draws`` (``TRAIN_OUTPUTS``).
    See ``build_train_pipeline``."""
    jpegs, pose, meta = _reader(info, use_mmap=use_mmap, random_shuffle=True, initial_fill=max(1, shuffle_buffer),
                                shuffle_after_epoch=True, shuffle_after_epoch_seed=shuffle_seed,
                                shard_id=shard_id, num_shards=num_shards)
    draws = _train_draws(augment)
    images, targets, weights, crop_box = _crop(
        jpegs, pose, meta, draws, info=info, size=size, shift=augment.shift, device=device, layout=layout,
        dtype=dtype, normalize=normalize, swap_labels=swap_labels, decode=decode, cache_mb=cache_mb)
    return (images, targets, weights) + ((crop_box, pose, meta, draws) if extras else ())


@pipeline_def
def eval_graph(info: SplitInfo, *, extension: float, size: int, device: str, layout: str, dtype: str,
               shard_id: int, num_shards: int, normalize: bool, decode: str):
    """The evaluation graph: this rank's records in shard order, the last batch padded by the reader.
    Outputs ``images, targets, weights, crop_box, pose, meta``."""
    jpegs, pose, meta = _reader(info, random_shuffle=False, shard_id=shard_id, num_shards=num_shards,
                                stick_to_shard=True, pad_last_batch=True)
    draws = fn.constant(fdata=[float(v) for v in codec.eval_draws(extension)], shape=[codec.NUM_DRAWS])
    images, targets, weights, crop_box = _crop(
        jpegs, pose, meta, draws, info=info, size=size, shift=0.0, device=device, layout=layout, dtype=dtype,
        normalize=normalize, swap_labels=True, decode=decode)
    return images, targets, weights, crop_box, pose, meta


def _device_id(device: str, device_id: int | None) -> int | None:
    """DALI's ``device_id``: None runs CPU operators only."""
    return (0 if device_id is None else device_id) if device == "gpu" else None


def build_train_pipeline(data, *, batch_size: int, augment: AugmentSpec = AugmentSpec(), input_size: int = 227,
                         seed: int = 0, shard_id: int = 0, num_shards: int = 1, device: str = "auto",
                         layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2,
                         split: str | None = None, device_id: int | None = None, normalize: bool = True,
                         swap_labels: bool = True, shuffle_buffer: int = 1024, use_mmap: bool = False,
                         extras: bool = False, decode: str = "auto", cache_mb: int = 0):
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
    left/right swap: both for inspection and tests only. ``decode`` (``auto``, ``region``, ``whole``) and
    ``cache_mb`` (the GPU decoder cache, MB; 0 = none): see the module docstring.
    """
    info = as_split(data, split, "train")
    _check_args(batch_size, input_size, layout, dtype, shard_id, num_shards)
    device = resolve_device(device)
    decode = resolve_decode(decode, device)
    native.load()
    return train_graph(info, augment, size=input_size, device=device, layout=layout, dtype=dtype,
                       shuffle_seed=int(seed), shard_id=shard_id, num_shards=num_shards,
                       shuffle_buffer=shuffle_buffer, use_mmap=use_mmap, normalize=normalize,
                       swap_labels=swap_labels, extras=extras, decode=decode, cache_mb=cache_mb,
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
                 device_id: int | None = None, normalize: bool = True, decode: str = "auto") -> Iterator[dict]:
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
    decode = resolve_decode(decode, device)
    native.load()
    start, end = shard_range(info.count, shard_id, num_shards)
    size = end - start
    if size == 0:
        return
    pipe = eval_graph(info, extension=extension, size=input_size, device=device, layout=layout, dtype=dtype,
                      shard_id=shard_id, num_shards=num_shards, normalize=normalize, decode=decode,
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
