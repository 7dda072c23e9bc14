"""Reading a prepared data set back: the shards of a split checked against their DALI indexes
(``shard_paths``, ``check_shard``) and streamed as ``Record``s (``iter_shard``, ``iter_records``)."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np

from deeppose_fast.datasets.shards.format import (PREPARE_HINT, EXTENSIONS, MANIFEST, META_FIELDS, Record,
                                                  ShardError, index_count, index_path, read_index)
from deeppose_fast.datasets.shards.manifest import Manifest, rebuild_hint


def shard_paths(out_dir: str | os.PathLike, split: str,
                manifest: Manifest | None = None) -> tuple[list[Path], list[Path]]:
    """``(tar paths, idx paths)`` of a split, validated through ``Manifest.read`` (unless the caller
    passes the manifest it read) and ``check_shard`` (so a truncated shard is named here rather than deep
    inside DALI)."""
    out_dir = Path(out_dir)
    manifest = (Manifest.read(out_dir) if manifest is None else manifest).to_dict()
    if split not in manifest["splits"]:
        raise ShardError(f"{out_dir / MANIFEST}: no split {split!r} (has {sorted(manifest['splits'])})")
    tars = [out_dir / name for name in manifest["splits"][split]["shards"]]
    hint = rebuild_hint(out_dir, manifest)
    for tar in tars:
        check_shard(tar, hint=hint)
    return tars, [index_path(t) for t in tars]


def check_shard(tar_path: str | os.PathLike, *, hint: str = PREPARE_HINT) -> int:
    """A cheap integrity check of one shard against its DALI index (no tar reading): the tar and the
    ``.idx`` exist, the index is well formed and every member it lists ends inside the tar. This is the
    check DALI's reader makes when it starts, here with a message naming the shard. Returns the record
    count; raises ``ShardError`` ending with ``hint`` (what rebuilds the data set)."""
    tar_path = Path(tar_path)
    idx = index_path(tar_path)
    if not tar_path.is_file():
        raise ShardError(f"{tar_path}: shard is missing; {hint}")
    try:
        count, rows = read_index(idx)
        end = max((int(r[i + 1]) + int(r[i + 2]) for r in rows for i in range(0, len(r), 4)), default=0)
    except FileNotFoundError:
        raise ShardError(f"{idx}: DALI index of {tar_path.name} is missing; {hint}") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"{idx}: malformed DALI index of {tar_path.name} ({e}); {hint}") from None
    size = tar_path.stat().st_size
    if end > size:
        raise ShardError(f"{tar_path}: truncated or corrupt: its index {idx.name} lists data up to byte "
                         f"{end} but the file has {size} bytes; {hint}")
    return count


def _decode_npy(data: bytes, tar_path: Path, member: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise ShardError(f"{tar_path}: member {member} is not a valid .npy ({e}); {PREPARE_HINT}") from None


def iter_shard(tar_path: str | os.PathLike) -> Iterator[Record]:
    """Stream the records of one shard (tarfile, no random access), checking the layout.

    If the shard's ``.idx`` is present, the record count must match it, which catches a tar cut at a
    member boundary (a streaming reader would otherwise just see a shorter archive).
    """
    tar_path = Path(tar_path)
    group: dict[str, bytes] = {}
    key: str | None = None
    count = 0

    def finish() -> Record:
        missing = [e for e in EXTENSIONS if e not in group]
        if missing:
            raise ShardError(f"{tar_path}: record {key} lacks {', '.join(missing)}; {PREPARE_HINT}")
        pose = _decode_npy(group["pose.npy"], tar_path, f"{key}.pose.npy")
        meta = _decode_npy(group["meta.npy"], tar_path, f"{key}.meta.npy")
        if pose.ndim != 2 or pose.shape[1] != 4 or meta.shape != (len(META_FIELDS),):
            raise ShardError(f"{tar_path}: record {key} has pose {pose.shape} / meta {meta.shape}, "
                             f"expected (K, 4) / ({len(META_FIELDS)},)")
        return Record(int(key), group["jpg"], pose, meta)

    try:
        with tarfile.open(tar_path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base, _, ext = member.name.partition(".")
                if not base.isdigit() or ext not in EXTENSIONS:
                    raise ShardError(f"{tar_path}: unexpected member {member.name!r} "
                                     f"(expected KEY.jpg, KEY.pose.npy, KEY.meta.npy)")
                if base != key:
                    if key is not None:
                        yield finish()
                        count += 1
                    key, group = base, {}
                if ext in group:
                    raise ShardError(f"{tar_path}: member {member.name!r} appears twice")
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise ShardError(f"{tar_path}: member {member.name!r} is truncated")
                group[ext] = data
            if key is not None:
                yield finish()
                count += 1
    except FileNotFoundError:
        raise ShardError(f"{tar_path}: shard not found; {PREPARE_HINT}") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(f"{tar_path}: truncated or corrupt tar ({e}); {PREPARE_HINT}") from None
    expected = index_count(index_path(tar_path))
    if expected is not None and expected != count:
        raise ShardError(f"{tar_path}: holds {count} records but its index {index_path(tar_path).name} "
                         f"says {expected}: truncated or corrupt; {PREPARE_HINT}")


def iter_records(out_dir: str | os.PathLike, split: str) -> Iterator[Record]:
    """Stream every record of a split, in shard order (= key order), after validating the manifest.

    Yields ``Record(key, jpeg, pose (K, 4) float32, meta (10,) float32)``; checks the total against the
    manifest's ``count``.
    """
    manifest = Manifest.read(out_dir)
    tars, _ = shard_paths(out_dir, split, manifest)
    expected = manifest.count(split)
    count = 0
    for tar in tars:
        for record in iter_shard(tar):
            count += 1
            yield record
    if count != expected:
        raise ShardError(f"{Path(out_dir) / MANIFEST}: split {split!r} lists {expected} records, "
                         f"the shards hold {count}; {PREPARE_HINT}")
