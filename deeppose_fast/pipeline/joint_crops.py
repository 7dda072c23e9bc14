"""Joint crops of the DeepPose cascade (stages s >= 2): the crops, targets and weights of one joint each,
cut from the same shards, by the same decoder and warp as the person crops (``dali.cut``), with the native
``JointCrop`` operator's geometry (rule: ``codec.joint_crop_geometry``).

Legend: B crops per batch, S input size, K joints, N people of a split, M crops.

A stage's crops are centred on *estimates* of the joints, which DALI's readers cannot know: they come from
NumPy (the simulated estimates of ``cascade.statistics.sample_centres`` in training, the previous stage's
predictions in evaluation). So the records are read here (``RecordTable``: every pose and meta in memory,
each JPEG read from its shard at the offset the DALI index gives, when its crop is due) and fed to the DALI
graph (``joint_crop_graph``) with each crop's five draws (``codec.JOINT_DRAW_FIELDS``: centre x, y and
side in the record's source frame, flip, joint). The geometry, decode and warp run in DALI as for stage 1,
on the CPU or the GPU.

- ``crop_batches(table, records, draws)``: the M crops asked for, in order (evaluation, inference).
- ``stage_train_batches(data, stats, sigma=...)``: an endless stream of training crops: every annotated
  joint of every person of this rank's part of the split once per epoch (shuffled), each about a fresh
  simulated estimate, flipped at random; a pure function of ``seed`` (exact resume).
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from deeppose_fast import codec
from deeppose_fast import skeleton as skeleton_lib
from deeppose_fast.datasets import shards
from deeppose_fast.datasets.shards.format import read_index
from deeppose_fast.pipeline import dali, native
from deeppose_fast.pipeline.contract import PipelineError, SplitInfo, as_split, resolve_device, shard_range

OUTPUTS = ("images", "targets", "weights", "crop_box")


class RecordTable:
    """Random access to the records of a split.

    Attributes:
        info: the split. pose: (N, K, 4) float32 and meta: (N, 10) float32, the records' own arrays (JPEG
        frame; ``shards.META_FIELDS``), in shard order (the order of ``dali.eval_batches``).
    The JPEGs stay in the shards: ``jpegs(rows)`` reads them (one ``pread`` each).
    """

    def __init__(self, info: SplitInfo):
        self.info = info
        where, poses, metas = [], [], []
        for shard, (tar, idx) in enumerate(zip(info.tars, info.indices)):
            try:
                _, rows = read_index(Path(idx))
                with open(tar, "rb") as f:
                    for row in rows:
                        parts = {row[i]: (int(row[i + 1]), int(row[i + 2])) for i in range(0, len(row), 4)}
                        where.append((shard, *parts["jpg"]))
                        poses.append(_npy(f, *parts["pose.npy"]))
                        metas.append(_npy(f, *parts["meta.npy"]))
            except (OSError, ValueError, KeyError) as e:
                raise PipelineError(f"{tar}: cannot read its records ({type(e).__name__}: {e}); "
                                    f"{info.rebuild_hint}") from None
        if len(where) != info.count:
            raise PipelineError(f"{info.shard_dir}: split {info.split!r}: the shards hold {len(where)} records "
                                f"but manifest.json says {info.count}; {info.rebuild_hint}")
        self._where = np.array(where, np.int64)  # (N, 3) shard, offset, size of each JPEG
        try:
            self.pose = np.stack(poses).astype(np.float32)
            self.meta = np.stack(metas).astype(np.float32)
        except ValueError as e:
            raise PipelineError(f"{info.shard_dir}: split {info.split!r}: records of different shapes ({e}); "
                                f"{info.rebuild_hint}") from None
        if self.pose.shape[1:] != (info.num_joints, 4) or self.meta.shape[1:] != (len(shards.META_FIELDS),):
            raise PipelineError(f"{info.shard_dir}: split {info.split!r}: records hold pose {self.pose.shape[1:]} "
                                f"and meta {self.meta.shape[1:]}, expected ({info.num_joints}, 4) and "
                                f"({len(shards.META_FIELDS)},); {info.rebuild_hint}")

    @property
    def count(self) -> int:
        return len(self.pose)

    def jpegs(self, rows: Iterable[int]) -> list[np.ndarray]:
        """The encoded JPEGs of ``rows``, as 1-D uint8 arrays."""
        out = []
        files = {}
        try:
            for r in rows:
                shard, offset, size = self._where[r]
                if shard not in files:
                    files[shard] = os.open(self.info.tars[shard], os.O_RDONLY)
                data = os.pread(files[shard], int(size), int(offset))
                if len(data) != size:
                    raise PipelineError(f"{self.info.tars[shard]}: truncated at record {r} of split "
                                        f"{self.info.split!r}; {self.info.rebuild_hint}")
                out.append(np.frombuffer(data, np.uint8))
        finally:
            for fd in files.values():
                os.close(fd)
        return out

    def joints(self) -> np.ndarray:
        """(N, K, 2) float64 joints in each record's source frame relative to its offset (the frame of the
        crop geometry's centres and crop boxes), NaN where not annotated."""
        scale = self.meta[:, shards.META_SCALE].astype(np.float64)[:, None, :]
        xy = self.pose[:, :, :2].astype(np.float64) / scale
        return np.where(self.pose[:, :, 2:3] > 0.5, xy, np.nan)

    def offsets(self) -> np.ndarray:
        """(N, 2) float64: where each record's source frame starts in its source image (pixels)."""
        return self.meta[:, 4:6].astype(np.float64)


def _npy(f, offset: int, size: int) -> np.ndarray:
    f.seek(offset)
    return np.load(io.BytesIO(f.read(size)), allow_pickle=False)


@pipeline_def
def joint_crop_graph(*, source, flip_perm: list[int], size: int, device: str, layout: str, dtype: str,
                     normalize: bool, decode: str):
    """The joint crops of the batches ``source`` yields: ``(jpegs [B x (bytes,) uint8], pose (B, K, 4),
    meta (B, 10), draws (B, 5))``. Outputs ``images, targets, weights, crop_box`` (``OUTPUTS``)."""
    jpegs, pose, meta, draws = fn.external_source(
        source=source, num_outputs=4, batch=True, cycle="raise",
        dtype=[types.UINT8, types.FLOAT, types.FLOAT, types.FLOAT])
    shape = fn.peek_image_shape(jpegs)
    scale = meta[shards.META_SCALE.start:shards.META_SCALE.stop]
    matrix, anchor, region, targets, weights, crop_box = fn.joint_crop(
        pose, shape, draws, scale, size=size, flip_perm=flip_perm, region_relative=decode != "whole")
    images = dali.cut(jpegs, matrix, anchor, region, size=size, device=device, layout=layout, dtype=dtype,
                      normalize=normalize, decode=decode)
    return images, targets, weights, crop_box


def _pipeline(info: SplitInfo, source, *, batch_size: int, input_size: int, device: str = "auto",
              layout: str = "NHWC", dtype: str = "float32", num_threads: int = 2, device_id: int | None = None,
              normalize: bool = True, decode: str = "auto"):
    dali._check_args(batch_size, input_size, layout, dtype, 0, 1)
    device = resolve_device(device)
    decode = dali.resolve_decode(decode, device)
    native.load()
    pipe = joint_crop_graph(source=source, flip_perm=list(info.flip_perm), size=input_size, device=device,
                            layout=layout, dtype=dtype, normalize=normalize, decode=decode,
                            batch_size=batch_size, num_threads=num_threads,
                            device_id=dali._device_id(device, device_id),
                            seed=0, prefetch_queue_depth=2)
    dali._build(pipe, info)
    return pipe


def _run(pipe, info: SplitInfo) -> dict | None:
    """One batch as NumPy arrays (``OUTPUTS``), None when the source is exhausted; DALI's failures as
    ``dali._run`` reports them (naming the shard or record at fault)."""
    try:
        outputs = dali._run(pipe, info)
    except StopIteration:
        return None
    return {n: dali.to_numpy(o) for n, o in zip(OUTPUTS, outputs)}


def crop_batches(table: RecordTable, records: np.ndarray, draws: np.ndarray, *, batch_size: int,
                 input_size: int = 227, device: str = "auto", layout: str = "NHWC", dtype: str = "float32",
                 num_threads: int = 2, device_id: int | None = None, normalize: bool = True,
                 decode: str = "auto") -> Iterator[dict]:
    """The M joint crops asked for, in order, ``batch_size`` at a time (the last batch may be smaller).

    Args:
        table: the split's records. records: (M,) int, the row of each crop's person.
        draws: (M, 5) float32 ``codec.JOINT_DRAW_FIELDS``: centre x, y and side in the record's source
            frame relative to its offset (``RecordTable.joints``' frame), flip (0/1), joint index.
    Yields dicts of ``images`` (B, S, S, 3) or (B, 3, S, S), ``targets`` (B, K, 2), ``weights`` (B, K) and
    ``crop_box`` (B, 4) ``x0, y0, side, side`` (source frame relative to the offset).
    """
    records = np.asarray(records, np.int64)
    draws = np.asarray(draws, np.float32)
    if records.ndim != 1 or draws.shape != (len(records), len(codec.JOINT_DRAW_FIELDS)):
        raise ValueError(f"records must be (M,) and draws (M, {len(codec.JOINT_DRAW_FIELDS)}), got {records.shape} "
                         f"and {draws.shape}")
    if len(records) == 0:
        return

    def source():
        for b in range(0, len(records), batch_size):
            rows = records[b:b + batch_size]
            yield table.jpegs(rows), table.pose[rows], table.meta[rows], draws[b:b + batch_size]

    pipe = _pipeline(table.info, source, batch_size=batch_size, input_size=input_size, device=device,
                     layout=layout, dtype=dtype, num_threads=num_threads, device_id=device_id,
                     normalize=normalize, decode=decode)
    for _ in range(math.ceil(len(records) / batch_size)):
        batch = _run(pipe, table.info)
        if batch is None:  # pragma: no cover - the source yields exactly this many batches
            break
        yield batch


def sample_training_draws(rng: np.random.Generator, gt: np.ndarray, rows: np.ndarray, joints: np.ndarray,
                          stats, skeleton: skeleton_lib.Skeleton, *, sigma: float, flip: bool) -> np.ndarray:
    """(B, 5) draws of training crops: joint ``joints[b]`` of person ``rows[b]`` about a simulated estimate.

    Each person's whole pose is simulated (``statistics.sample_centres``, one draw); the crop is centred on
    the simulated joint and its side is ``sigma`` times the simulated pose's torso diameter (the estimate's,
    as at test time; the truth's where the simulated torso has no diagonal). Flips with probability 0.5
    when ``flip``. ``gt``: (N, K, 2) source frame relative to the offset, NaN = not annotated.
    """
    from deeppose_fast.cascade import statistics  # the cascade's law; the pipeline only draws from it

    truth = gt[rows]
    centres, diam_truth = statistics.sample_centres(rng, truth, stats, skeleton, 1)
    diam = skeleton.torso_diameter(centres)
    diam = np.where(np.isfinite(diam) & (diam > 0), diam, diam_truth)
    flips = (rng.random(len(rows)) < 0.5) if flip else np.zeros(len(rows), bool)
    pick = np.arange(len(rows))
    return np.stack([centres[pick, joints, 0], centres[pick, joints, 1], sigma * diam,
                     flips.astype(np.float64), joints.astype(np.float64)], axis=1).astype(np.float32)


def training_items(gt: np.ndarray, skeleton: skeleton_lib.Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, joints)`` (M,) of the crops a stage is trained on: every annotated joint of every person
    whose ground truth has a torso diameter (the unit of the displacements)."""
    diam = skeleton.torso_diameter(gt)
    usable = np.isfinite(gt).all(-1) & (np.isfinite(diam) & (diam > 0))[:, None]
    return np.nonzero(usable)


WEIGHTS = ("own", "all")


def refined_labels(draws: np.ndarray, flip_perm) -> np.ndarray:
    """(B,) int32: the label each crop's refined joint has in its targets and weights (the draw's joint,
    or on a flipped crop the label it plays: ``flipped = joints[flip_perm]``). ``draws``: (B, 5)."""
    joints = np.asarray(draws)[:, 4].astype(np.int64)
    flipped = np.asarray(draws)[:, 3] > 0.5
    played = np.argsort(np.asarray(flip_perm))  # joint j becomes label argsort(perm)[j]
    return np.where(flipped, played[joints], joints).astype(np.int32)


def weights_inside(gt: np.ndarray, crop_box: np.ndarray, flipped: np.ndarray, flip_perm) -> np.ndarray:
    """(B, K) float32 weights of every annotated joint inside its crop (``joint_weights="all"``): joint ``k``
    of crop ``b`` when its ground truth ``gt[b, k]`` (source frame relative to the offset, NaN = not
    annotated) lies in the square ``crop_box[b]``; on a flipped crop on the label ``flip_perm[k]`` plays."""
    box = np.asarray(crop_box, np.float64)[:, None, :]
    with np.errstate(invalid="ignore"):
        t = (gt - box[..., :2]) / box[..., 2:]
        inside = ((t >= 0) & (t <= 1)).all(-1)  # NaN compares False: not annotated
    perm = np.asarray(flip_perm)
    out = inside.astype(np.float32)
    out[flipped] = 0.0
    rows = np.flatnonzero(flipped)
    out[rows[:, None], perm[None, :]] = inside[rows].astype(np.float32)  # label perm[k] gets joint k
    return out


def stage_train_batches(data, stats, *, sigma: float, batch_size: int, input_size: int = 227, flip: bool = True,
                        seed: int = 0, shard_id: int = 0, num_shards: int = 1, split: str | None = None,
                        table: RecordTable | None = None, extras: bool = False, joint_weights: str = "own",
                        joint_input: bool = False, **pipeline_kwargs) -> Iterator[tuple]:
    """Endless training batches of a cascade stage: ``(images, targets (B, K, 2), weights (B, K))`` NumPy
    arrays, weights 1 only on each crop's refined joint (``joint_weights="own"``, the paper's: output pair
    ``i`` learns joint ``i`` from joint ``i``'s crops) or on every annotated joint inside the crop
    (``"all"``: ``weights_inside``; inference still reads pair ``i`` of joint ``i``'s crop), and
    ``(crop_box (B, 4), draws (B, 5), rows (B,))`` more with ``extras``: rows are the people's records in
    ``table``. With ``joint_input`` (a joint-conditioned network, ``ModelSpec.joint_input``; own weights
    only) the first item is ``(images, refined_labels (B,) int32)``.

    This rank reads part ``shard_id`` of ``num_shards`` of the split's people (``contract.shard_range``,
    as DALI's readers split). An epoch is every training item (``training_items``) of that part once, in
    an order drawn anew each epoch; epochs follow each other without a gap, so every batch is full. The
    stream is a pure function of ``seed``. ``stats``: the displacement law
    (``cascade.statistics.DisplacementStats``); ``sigma``: the crop side in torso diameters.
    ``pipeline_kwargs``: ``device``, ``layout``, ``dtype``, ``num_threads``, ``device_id``, ``decode``,
    ``normalize`` as ``crop_batches``.
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma}")
    if joint_weights not in WEIGHTS:
        raise ValueError(f"joint_weights must be one of {WEIGHTS}, got {joint_weights!r}")
    if joint_input and joint_weights != "own":
        raise ValueError("a joint-conditioned network regresses the joint it is given alone: joint_weights must "
                         "be 'own'")
    info = table.info if table is not None else as_split(data, split, "train")
    table = table or RecordTable(info)
    skeleton = skeleton_lib.get(info.skeleton)
    start, end = shard_range(table.count, shard_id, num_shards)
    gt = table.joints()
    rows, joints = training_items(gt[start:end], skeleton)
    if rows.size == 0:
        raise PipelineError(f"{info.shard_dir}: split {info.split!r}, part {shard_id} of {num_shards}: no person "
                            f"with an annotated torso diagonal: nothing to train a cascade stage on")
    rows = rows + start
    rng = np.random.default_rng(seed)

    def source():
        order = np.empty(0, np.int64)
        while True:
            while order.size < batch_size:
                order = np.concatenate([order, rng.permutation(rows.size)])
            pick, order = order[:batch_size], order[batch_size:]
            r, j = rows[pick], joints[pick]
            draws = sample_training_draws(rng, gt, r, j, stats, skeleton, sigma=sigma, flip=flip)
            made.append((draws, r))
            yield table.jpegs(r), table.pose[r], table.meta[r], draws

    made = []  # the draws and rows of the batches made, oldest first (the pipeline prefetches)
    pipe = _pipeline(info, source, batch_size=batch_size, input_size=input_size, **pipeline_kwargs)
    while True:
        batch = _run(pipe, info)
        draws, r = made.pop(0)
        weights = batch["weights"]
        if joint_weights == "all":  # every annotated joint in the crop, not only the one refined
            weights = weights_inside(gt[r], batch["crop_box"], draws[:, 3] > 0.5, info.flip_perm)
        images = (batch["images"], refined_labels(draws, info.flip_perm)) if joint_input else batch["images"]
        out = (images, batch["targets"], weights)
        yield out + ((batch["crop_box"], draws, r) if extras else ())
