"""``ShardWriter``: one split of a prepared data set written as tar shards, each complete or absent."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np

from deeppose_fast.datasets.jpeg import jpeg_size

from deeppose_fast.datasets.shards.format import (DEFAULT_RECORDS_PER_SHARD, MANIFEST, META_FIELDS, ShardError,
                                                  index_path, make_index, shard_name)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # fixed metadata: the same records give byte-identical shards
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Writes one split of a prepared data set as tar shards of ``records_per_shard`` people.

    Use as a context manager::

        with ShardWriter(out_dir, "train") as w:
            w.write(key, jpeg, pose, meta)
        w.shards  # [("train-00000.tar", 1000), ("train-00001.tar", 412)]

    Each shard is written as a hidden temporary file, indexed with ``wds2idx`` and renamed to
    ``{split}-{n:05d}.tar`` / ``.idx`` when complete. Entering removes a stale ``manifest.json`` from
    ``out_dir`` (the folder is incomplete until the caller writes a new one with ``write_manifest``).
    If the block raises (KeyboardInterrupt included), the temporary file and every shard this writer
    completed are removed, so a half-written split never looks complete.
    """

    def __init__(self, out_dir: str | os.PathLike, split: str,
                 records_per_shard: int = DEFAULT_RECORDS_PER_SHARD):
        if not split or not split.isidentifier():
            raise ValueError(f"split must be a plain name like 'train' or 'test', got {split!r}")
        if records_per_shard < 1:
            raise ValueError(f"records_per_shard must be >= 1, got {records_per_shard}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.records_per_shard = int(records_per_shard)
        self.shards: list[tuple[str, int]] = []
        self.count = 0
        self.decoded_bytes = 0  # the split's regions decoded (H x W x 3 uint8): what a decode cache holds
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._in_shard = 0
        self._last_key = -1
        self._num_joints: int | None = None
        self._closed = False

    # context manager -------------------------------------------------------------------------
    def __enter__(self) -> "ShardWriter":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / MANIFEST).unlink(missing_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    # writing ---------------------------------------------------------------------------------
    def write(self, key: int, jpeg: bytes, pose: np.ndarray, meta: np.ndarray) -> None:
        """Append one person.

        Args:
            key: running person index over the whole data set; strictly increasing within a writer.
            jpeg: the JPEG bytes of the person's region.
            pose: (K, 4) ``x, y, annotated, visible``, finite (0 where not annotated).
            meta: (10,) see ``META_FIELDS`` (head box may be NaN).
        """
        if self._closed:
            raise ShardError(f"ShardWriter for {self.out_dir}/{self.split} is already closed")
        key = int(key)
        if not 0 <= key < 10 ** 8:
            raise ValueError(f"key must be in [0, 1e8) (8 digits), got {key}")
        if key <= self._last_key:
            raise ValueError(f"keys must be strictly increasing within a split: {key} after {self._last_key}")
        if not isinstance(jpeg, (bytes, bytearray, memoryview)) or bytes(jpeg[:2]) != b"\xff\xd8":
            raise ValueError(f"record {key}: jpeg must be JPEG bytes (starting with FF D8)")
        pose = np.asarray(pose)
        if pose.ndim != 2 or pose.shape[1] != 4:
            raise ValueError(f"record {key}: pose must have shape (K, 4), got {pose.shape}")
        if self._num_joints is None:
            self._num_joints = pose.shape[0]
        elif pose.shape[0] != self._num_joints:
            raise ValueError(f"record {key}: pose has {pose.shape[0]} joints, earlier records {self._num_joints}")
        pose = pose.astype(np.float32)
        if not np.isfinite(pose).all():
            raise ValueError(f"record {key}: pose must be finite (write x = y = 0 where not annotated)")
        meta = np.asarray(meta, dtype=np.float32)
        if meta.shape != (len(META_FIELDS),):
            raise ValueError(f"record {key}: meta must have shape ({len(META_FIELDS)},), got {meta.shape}")

        try:
            width, height = jpeg_size(bytes(jpeg[:65536]))  # the frame header comes first
        except ValueError:  # a damaged JPEG (prepare checks every image; tests write some on purpose)
            width = height = 0  # counts nothing; readers report the record when they decode it
        if self._tar is None:
            self._open_shard()
        name = f"{key:08d}"
        _add_member(self._tar, f"{name}.jpg", bytes(jpeg))
        _add_member(self._tar, f"{name}.pose.npy", _npy_bytes(pose))
        _add_member(self._tar, f"{name}.meta.npy", _npy_bytes(meta))
        self._last_key = key
        self._in_shard += 1
        self.count += 1
        self.decoded_bytes += 3 * width * height
        if self._in_shard == self.records_per_shard:
            self._finish_shard()

    def close(self) -> list[tuple[str, int]]:
        """Finish the last shard. Returns ``[(shard name, record count), ...]``."""
        if not self._closed:
            if self._tar is not None:
                self._finish_shard()
            self._closed = True
        return list(self.shards)

    def summary(self) -> dict:
        """The manifest entry of this split: ``{"count": N, "shards": [names], "decoded_bytes": B}`` (B:
        the split's JPEGs decoded to RGB, the memory a decode-once cache needs)."""
        return {"count": self.count, "shards": [name for name, _ in self.shards], "decoded_bytes": self.decoded_bytes}

    def abort(self) -> None:
        """Remove the temporary shard and every shard this writer completed."""
        if self._tar is not None:
            try:
                self._tar.close()
            except Exception:  # the file is deleted next; a failure to flush it does not matter
                pass
            self._tar = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            index_path(self._tmp).unlink(missing_ok=True)
        for name, _ in self.shards:
            (self.out_dir / name).unlink(missing_ok=True)
            index_path(self.out_dir / name).unlink(missing_ok=True)
        self.shards = []
        self.count = 0
        self.decoded_bytes = 0
        self._closed = True

    # internals -------------------------------------------------------------------------------
    def _open_shard(self) -> None:
        final = shard_name(self.split, len(self.shards))
        # hidden name: neither a glob for "*.tar" nor DALI would take it for a finished shard
        self._tmp = self.out_dir / f".{final}.{os.getpid()}.partial.tar"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._in_shard = 0

    def _finish_shard(self) -> None:
        self._tar.close()
        self._tar = None
        final = self.out_dir / shard_name(self.split, len(self.shards))
        tmp_idx = index_path(self._tmp)
        make_index(self._tmp, tmp_idx)
        os.replace(self._tmp, final)
        os.replace(tmp_idx, index_path(final))
        self._tmp = None
        self.shards.append((final.name, self._in_shard))
        self._in_shard = 0
