"""The record layout of a shard and the names of its files (the package docstring describes the format):
``Record``, ``encode_record`` / ``decode_record`` (one person's ``pose`` and ``meta``), shard and index
names, and DALI's webdataset index (made with ``wds2idx``, read back by ``read_index``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EXTENSIONS = ("jpg", "pose.npy", "meta.npy")
META_FIELDS = ("head_x1", "head_y1", "head_x2", "head_y2", "offset_x", "offset_y", "person_index",
               "image_id")
POSE_FIELDS = ("x", "y", "annotated", "visible")
DEFAULT_RECORDS_PER_SHARD = 1000
PREPARE_HINT = "run `deeppose-fast prepare ...` to (re)build it"


class ShardError(Exception):
    """A prepared data set folder is missing, incomplete or corrupt (the message names the path)."""


class NotPreparedError(ShardError, FileNotFoundError):
    """The folder or its manifest does not exist: the data set was not prepared, or not to the end."""


class Record(NamedTuple):
    """One person of a shard: ``key`` (int), ``jpeg`` (bytes), ``pose`` (K, 4) float32,
    ``meta`` (8,) float32."""

    key: int
    jpeg: bytes
    pose: np.ndarray
    meta: np.ndarray


def encode_record(joints: np.ndarray, visible: np.ndarray, head_box: np.ndarray, offset, person_index: int,
                  image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One person's ``pose`` and ``meta`` for a JPEG of a region whose corner is ``offset`` in the source.

    Args:
        joints: (K, 2) source continuous pixels, NaN where not annotated.
        visible: (K,) bool; head_box: (4,) ``x1, y1, x2, y2`` source pixels (NaN when the data set has none).
        offset: ``(x0, y0)`` integers, the region's corner in the source image (0, 0 for the whole image).
        person_index, image_id: the person's running index and its source image's id.
    Returns:
        ``pose`` (K, 4) float32 ``x, y, annotated, visible`` in the region's frame (0 where not annotated)
        and ``meta`` (8,) float32 (``META_FIELDS``).
    """
    x0, y0 = offset
    annotated = np.isfinite(joints).all(axis=1)
    pose = np.zeros((len(joints), 4), np.float32)
    pose[annotated, 0] = joints[annotated, 0] - np.float32(x0)
    pose[annotated, 1] = joints[annotated, 1] - np.float32(y0)
    pose[:, 2] = annotated
    pose[:, 3] = visible & annotated
    head = head_box - np.array([x0, y0, x0, y0], np.float32)
    return pose, np.array([*head, x0, y0, person_index, image_id], np.float32)


def decode_record(record: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of ``encode_record``: ``joints`` (K, 2) float32 source pixels with NaN where not
    annotated, ``visible`` (K,) bool and ``head_box`` (4,) float32 source pixels."""
    pose, meta = record.pose, record.meta
    joints = np.where(pose[:, 2:3] > 0, pose[:, :2] + meta[4:6], np.float32(np.nan)).astype(np.float32)
    return joints, pose[:, 3] > 0, (meta[:4] + np.tile(meta[4:6], 2)).astype(np.float32)


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
