"""The record layout of a shard and the names of its files (the package docstring describes the format):
``Record``, ``encode_record`` / ``decode_record`` (one person's ``pose`` and ``meta``), shard and index
names, and DALI's webdataset index (made with ``wds2idx``, read back by ``read_index``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

FORMAT_VERSION = 2  # 2: meta gained scale_x, scale_y (regions stored at reduced resolution)
MANIFEST = "manifest.json"
EXTENSIONS = ("jpg", "pose.npy", "meta.npy")
META_FIELDS = ("head_x1", "head_y1", "head_x2", "head_y2", "offset_x", "offset_y", "person_index",
               "image_id", "scale_x", "scale_y")
META_SCALE = slice(8, 10)  # JPEG pixels per source pixel, x and y
POSE_FIELDS = ("x", "y", "annotated", "visible")
DEFAULT_RECORDS_PER_SHARD = 1000
PREPARE_HINT = "run `deeppose-fast prepare ...` to (re)build it"


class ShardError(Exception):
    """A prepared data set folder is missing, incomplete or corrupt (the message names the path)."""


class NotPreparedError(ShardError, FileNotFoundError):
    """The folder or its manifest does not exist: the data set was not prepared, or not to the end."""


class Record(NamedTuple):
    """One person of a shard: ``key`` (int), ``jpeg`` (bytes), ``pose`` (K, 4) float32,
    ``meta`` (10,) float32 (``META_FIELDS``)."""

    key: int
    jpeg: bytes
    pose: np.ndarray
    meta: np.ndarray


def encode_record(joints: np.ndarray, visible: np.ndarray, head_box: np.ndarray, offset, person_index: int,
                  image_id: int, scale=(1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """One person's ``pose`` and ``meta`` for a JPEG of a region whose corner is ``offset`` in the source,
    stored at ``scale`` JPEG pixels per source pixel: ``jpeg = (source - offset) * scale``.

    Args:
        joints: (K, 2) source continuous pixels, NaN where not annotated.
        visible: (K,) bool; head_box: (4,) ``x1, y1, x2, y2`` source pixels (NaN when the data set has none).
        offset: ``(x0, y0)`` integers, the region's corner in the source image (0, 0 for the whole image).
        person_index, image_id: the person's running index and its source image's id.
        scale: ``(s_x, s_y)`` JPEG pixels per source pixel (1, 1 for a region kept at full resolution);
            stored as float32, and the JPEG coordinates are computed with the stored value.
    Returns:
        ``pose`` (K, 4) float32 ``x, y, annotated, visible`` in the JPEG's frame (0 where not annotated)
        and ``meta`` (10,) float32 (``META_FIELDS``).
    """
    x0, y0 = offset
    s = np.asarray(scale, np.float32).astype(np.float64)
    annotated = np.isfinite(joints).all(axis=1)
    pose = np.zeros((len(joints), 4), np.float32)
    pose[annotated, :2] = (np.asarray(joints, np.float64)[annotated] - (x0, y0)) * s
    pose[:, 2] = annotated
    pose[:, 3] = visible & annotated
    head = (np.asarray(head_box, np.float64) - (x0, y0, x0, y0)) * np.tile(s, 2)
    return pose, np.array([*head, x0, y0, person_index, image_id, *s], np.float32)


def decode_record(record: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of ``encode_record``: ``joints`` (K, 2) float64 source pixels with NaN where not
    annotated, ``visible`` (K,) bool and ``head_box`` (4,) float64 source pixels."""
    pose, meta = np.asarray(record.pose, np.float64), np.asarray(record.meta, np.float64)
    scale, offset = meta[META_SCALE], meta[4:6]
    joints = np.where(pose[:, 2:3] > 0, pose[:, :2] / scale + offset, np.nan)
    return joints, pose[:, 3] > 0, meta[:4] / np.tile(scale, 2) + np.tile(offset, 2)


def shard_name(split: str, index: int) -> str:
    """``train-00003.tar`` for ``("train", 3)``."""
    return f"{split}-{index:05d}.tar"


def index_path(tar_path: str | os.PathLike) -> Path:
    """The DALI index beside a shard: ``x/train-00003.idx`` for ``x/train-00003.tar``."""
    return Path(tar_path).with_suffix(".idx")


def make_index(tar_path: str | os.PathLike, idx_path: str | os.PathLike | None = None) -> Path:
    """Write the DALI webdataset index of a tar with the ``wds2idx`` tool shipped in the nvidia-dali
    wheel (its ``IndexCreator``, which lists the tar with GNU tar). Returns the index path."""
    try:  # DALI's tool: loaded when a shard is written, not by every reader of the format
        from wds2idx import IndexCreator
    except ImportError as e:  # pragma: no cover - the wheel is a hard dependency
        raise ShardError("cannot import wds2idx: it ships with the nvidia-dali wheel; is it installed?") from e
    tar_path = Path(tar_path)
    idx_path = index_path(tar_path) if idx_path is None else Path(idx_path)
    with IndexCreator(str(tar_path), str(idx_path), verbose=False) as creator:
        creator.create_index()
    return idx_path


def read_index(idx: Path) -> tuple[int, list[list[str]]]:
    """``(count, rows)`` of a DALI webdataset index: a ``v1.2 N`` header, then per record one row of
    ``ext offset size name`` per component. ValueError if it is not one."""
    lines = idx.read_text().splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or not head[0].startswith("v"):
        raise ValueError("no 'vX.Y COUNT' header")
    rows = [line.split() for line in lines[1:] if line.strip()]
    if int(head[1]) != len(rows) or any(len(r) % 4 for r in rows):
        raise ValueError(f"header says {head[1]} records, {len(rows)} rows follow")
    return int(head[1]), rows


def index_count(idx: Path) -> int | None:
    try:
        with open(idx) as f:
            head = f.readline().split()
        return int(head[1])
    except (OSError, IndexError, ValueError):
        return None
