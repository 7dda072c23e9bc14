"""The tar shard format of a prepared data set (see docs/ARCHITECTURE.md, "Shard format").

A prepared data set is a folder::

    manifest.json
    train-00000.tar  train-00000.idx  train-00001.tar ...
    test-00000.tar   test-00000.idx

Each tar is in the webdataset layout, members grouped by key in key order, per person (K joints):

- ``KEY.jpg``: JPEG bytes;
- ``KEY.pose.npy``: float32 (K, 4) ``x, y, annotated, visible`` in the JPEG's continuous pixel frame,
  ``x = y = 0`` where not annotated;
- ``KEY.meta.npy``: float32 (8,) ``head_x1, head_y1, head_x2, head_y2, offset_x, offset_y,
  person_index, image_id``.

``KEY`` is the 8-digit running index of the person over the whole data set. Each ``.idx`` is DALI's
webdataset index made by the ``wds2idx`` tool of the nvidia-dali wheel. A shard is written under a
temporary name and renamed when complete; ``manifest.json`` is written last, so a folder without it is
incomplete.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EXTENSIONS = ("jpg", "pose.npy", "meta.npy")
META_FIELDS = ("head_x1", "head_y1", "head_x2", "head_y2", "offset_x", "offset_y", "person_index",
               "image_id")
POSE_FIELDS = ("x", "y", "annotated", "visible")
DEFAULT_RECORDS_PER_SHARD = 1000
_PREPARE_HINT = "run `deeppose-fast prepare ...` to (re)build it"


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
    try:
        from wds2idx import IndexCreator
    except ImportError as e:  # pragma: no cover - the wheel is a hard dependency
        raise ShardError("cannot import wds2idx: it ships with the nvidia-dali wheel; is it installed?") from e
    tar_path = Path(tar_path)
    idx_path = index_path(tar_path) if idx_path is None else Path(idx_path)
    with IndexCreator(str(tar_path), str(idx_path), verbose=False) as creator:
        creator.create_index()
    return idx_path


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
            meta: (8,) see ``META_FIELDS`` (head box may be NaN).
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

        if self._tar is None:
            self._open_shard()
        name = f"{key:08d}"
        _add_member(self._tar, f"{name}.jpg", bytes(jpeg))
        _add_member(self._tar, f"{name}.pose.npy", _npy_bytes(pose))
        _add_member(self._tar, f"{name}.meta.npy", _npy_bytes(meta))
        self._last_key = key
        self._in_shard += 1
        self.count += 1
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
        """The manifest entry of this split: ``{"count": N, "shards": [names]}``."""
        return {"count": self.count, "shards": [name for name, _ in self.shards]}

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


# manifest ------------------------------------------------------------------------------------
def write_manifest(out_dir: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (temporary file + ``os.replace``). Call it last."""
    out_dir = Path(out_dir)
    if "splits" not in manifest:
        raise ValueError("manifest needs a 'splits' entry: {split: {'count': N, 'shards': [...]}}")
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    path = out_dir / MANIFEST
    tmp = out_dir / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


PIXEL_CONVENTION = "continuous: pixel (i, j) covers [i, i+1) x [j, j+1), centre at +0.5"


def scale_named(values):
    """Generator parameters recorded before ``preset`` was renamed ``scale`` (manifests and
    ``.synthetic.json`` markers of earlier versions), read as the same parameters today."""
    if isinstance(values, dict) and "preset" in values and "scale" not in values:
        values = {("scale" if k == "preset" else k): v for k, v in values.items()}
    return values


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` as an object: read once (``Manifest.read``) and passed along.

    Attributes:
        name: the data set (``datasets.NAMES``, or a test data set's own name).
        splits: ``{split: {"count": N, "shards": [tar names]}}``.
        skeleton, joint_names, flip_pairs, num_joints: the joint layout (``deeppose_fast.skeleton``).
        num_people: people parsed (before per-image skips).
        split_mode, seed, source_root, precrop, synthetic: what makes a prepared folder one data set
            (``prepare`` compares them on a re-run); ``precrop`` is ``PrecropRule``'s fields.
        skipped, warnings: reason -> count; sources: annotation or archive path -> sha256.
        pixel_convention, created_by, seconds: provenance.
        extra: entries this version does not know (kept when written again).
    """

    name: str
    splits: dict
    skeleton: str | None = None
    joint_names: tuple = ()
    flip_pairs: tuple = ()
    num_joints: int | None = None
    num_people: int | None = None
    split_mode: str | None = None
    seed: int | None = None
    source_root: str | None = None
    precrop: dict = field(default_factory=dict)
    synthetic: dict | None = None
    skipped: dict = field(default_factory=dict)
    warnings: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    pixel_convention: str = PIXEL_CONVENTION
    created_by: str = ""
    seconds: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Manifest":
        """The manifest from its JSON object; unknown entries go to ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in values.items() if k in names}
        if "synthetic" in known:
            known["synthetic"] = scale_named(known["synthetic"])
        extra = {k: v for k, v in values.items() if k not in names and k != "format_version"}
        for key in ("joint_names", "flip_pairs"):
            if key in known:
                known[key] = tuple(tuple(v) if isinstance(v, list) else v for v in known[key])
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (``format_version`` first), lists where JSON has lists."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        values["joint_names"] = list(self.joint_names)
        values["flip_pairs"] = [list(p) for p in self.flip_pairs]
        return {"format_version": FORMAT_VERSION, **values, **self.extra}

    def replace(self, **changes) -> "Manifest":
        return dataclasses.replace(self, **changes)

    @classmethod
    def read(cls, out_dir: str | os.PathLike) -> "Manifest":
        """Read and validate ``out_dir/manifest.json`` (see ``read_manifest``, which raises the same)."""
        return cls.from_dict(read_manifest(out_dir))

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write ``out_dir/manifest.json`` atomically; call it last."""
        return write_manifest(out_dir, self.to_dict())

    def count(self, split: str) -> int:
        return int(self.splits[split]["count"])

    def shard_names(self, split: str) -> list[str]:
        return list(self.splits[split]["shards"])


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """Read and validate ``manifest.json``: every listed shard and its ``.idx`` must exist.

    Raises ``NotPreparedError`` for a missing folder or manifest, ``ShardError`` for anything else
    (each message names the path and says what is wrong).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise NotPreparedError(f"{out_dir}: no such folder: the data set is not prepared; {_PREPARE_HINT}")
    path = out_dir / MANIFEST
    if not path.is_file():
        raise NotPreparedError(f"{path} not found: the data set is not prepared or incomplete; {_PREPARE_HINT}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{path}: not valid JSON ({e}); {_PREPARE_HINT}") from None
    if not isinstance(manifest, dict):
        raise ShardError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ShardError(f"{path}: format_version {version!r}, this version reads {FORMAT_VERSION}; "
                         f"{_PREPARE_HINT}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        raise ShardError(f"{path}: missing or malformed 'splits' entry")
    for split, entry in splits.items():
        if not isinstance(entry, dict) or "shards" not in entry or "count" not in entry:
            raise ShardError(f"{path}: split {split!r} needs 'count' and 'shards'")
    for split, entry in splits.items():
        for name in entry["shards"]:
            tar = out_dir / name
            if not tar.is_file():
                raise ShardError(f"{tar}: shard listed in {path} is missing; {rebuild_hint(out_dir, manifest)}")
            if not index_path(tar).is_file():
                raise ShardError(f"{index_path(tar)}: DALI index of {name} is missing; "
                                 f"{rebuild_hint(out_dir, manifest)}")
    return manifest


def shard_paths(out_dir: str | os.PathLike, split: str) -> tuple[list[Path], list[Path]]:
    """``(tar paths, idx paths)`` of a split, validated through ``read_manifest`` and ``check_shard``
    (so a truncated shard is named here rather than deep inside DALI)."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if split not in manifest["splits"]:
        raise ShardError(f"{out_dir / MANIFEST}: no split {split!r} (has {sorted(manifest['splits'])})")
    tars = [out_dir / name for name in manifest["splits"][split]["shards"]]
    hint = rebuild_hint(out_dir, manifest)
    for tar in tars:
        check_shard(tar, hint=hint)
    return tars, [index_path(t) for t in tars]


def _read_index(idx: Path) -> tuple[int, list[list[str]]]:
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


def check_shard(tar_path: str | os.PathLike, *, hint: str = _PREPARE_HINT) -> int:
    """A cheap integrity check of one shard against its DALI index (no tar reading): the tar and the
    ``.idx`` exist, the index is well formed and every member it lists ends inside the tar. This is the
    check DALI's reader makes when it starts, here with a message naming the shard. Returns the record
    count; raises ``ShardError`` ending with ``hint`` (what rebuilds the data set)."""
    tar_path = Path(tar_path)
    idx = index_path(tar_path)
    if not tar_path.is_file():
        raise ShardError(f"{tar_path}: shard is missing; {hint}")
    try:
        count, rows = _read_index(idx)
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


def rebuild_command(out_dir: str | os.PathLike, manifest: "Manifest | dict") -> str:
    """The ``deeppose-fast prepare`` command that rebuilds ``out_dir`` with the settings its manifest
    records (name, sources, split, generator and pre-crop settings; defaults are left out)."""
    import shlex

    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()

    name = str(manifest.get("name", "NAME"))
    args = ["deeppose-fast", "prepare", name, "--out", str(Path(out_dir).resolve())]
    synth = manifest.get("synthetic")
    if isinstance(synth, dict):  # generated into OUT/raw: its parameters, not a source folder
        synth = scale_named(synth)
        for option, key, default in (("--scale", "scale", "small"), ("--size", "num_images", None),
                                     ("--generator-seed", "seed", 0)):
            if synth.get(key, default) != default:
                args += [option, str(synth[key])]
    elif manifest.get("source_root"):
        args += ["--source", str(manifest["source_root"])]
    if manifest.get("split_mode") == "image" and name == "mpii":
        args += ["--split-mode", "image"]
    if manifest.get("seed") not in (None, 1701):  # datasets.DTF_SEED, the CLI's default
        args += ["--seed", str(manifest["seed"])]
    precrop = manifest.get("precrop")
    if isinstance(precrop, dict):
        if precrop.get("enabled") is False:
            args.append("--no-precrop")
        for option, key, default in (("--jpeg-quality", "jpeg_quality", 95), ("--ext-max", "ext_max", 2.0),
                                     ("--max-shift", "shift", 0.1), ("--max-rotation", "rotation", 0.0),
                                     ("--max-scale-jitter", "scale_jitter", 0.0)):
            if precrop.get(key, default) != default:
                value = precrop[key]
                args += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    per_shard = _records_per_shard(Path(out_dir), manifest)
    if per_shard is not None and per_shard != DEFAULT_RECORDS_PER_SHARD:
        args += ["--records-per-shard", str(per_shard)]
    return shlex.join(args)


def _records_per_shard(out_dir: Path, manifest: dict) -> int | None:
    """The ``records_per_shard`` a folder was written with: the first shard of a split that has several
    is full (its index gives the count); with one shard per split, the largest split fits in one."""
    splits = [e for e in manifest.get("splits", {}).values() if isinstance(e, dict) and e.get("shards")]
    for entry in splits:
        if len(entry["shards"]) > 1:
            try:
                return _read_index(index_path(out_dir / entry["shards"][0]))[0]
            except (OSError, ValueError, UnicodeDecodeError):
                return None
    largest = max((int(e.get("count", 0)) for e in splits), default=0)
    return largest if largest > DEFAULT_RECORDS_PER_SHARD else None


def rebuild_hint(out_dir: str | os.PathLike, manifest: dict) -> str:
    """``re-run `deeppose-fast prepare ...` to rebuild it`` with the command for this folder."""
    return f"re-run `{rebuild_command(out_dir, manifest)}` to rebuild it"


# reading -------------------------------------------------------------------------------------
def _index_count(idx: Path) -> int | None:
    try:
        with open(idx) as f:
            head = f.readline().split()
        return int(head[1])
    except (OSError, IndexError, ValueError):
        return None


def _decode_npy(data: bytes, tar_path: Path, member: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise ShardError(f"{tar_path}: member {member} is not a valid .npy ({e}); {_PREPARE_HINT}") from None


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
            raise ShardError(f"{tar_path}: record {key} lacks {', '.join(missing)}; {_PREPARE_HINT}")
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
        raise ShardError(f"{tar_path}: shard not found; {_PREPARE_HINT}") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(f"{tar_path}: truncated or corrupt tar ({e}); {_PREPARE_HINT}") from None
    expected = _index_count(index_path(tar_path))
    if expected is not None and expected != count:
        raise ShardError(f"{tar_path}: holds {count} records but its index {index_path(tar_path).name} "
                         f"says {expected}: truncated or corrupt; {_PREPARE_HINT}")


def iter_records(out_dir: str | os.PathLike, split: str) -> Iterator[Record]:
    """Stream every record of a split, in shard order (= key order), after validating the manifest.

    Yields ``Record(key, jpeg, pose (K, 4) float32, meta (8,) float32)``; checks the total against the
    manifest's ``count``.
    """
    tars, _ = shard_paths(out_dir, split)
    expected = read_manifest(out_dir)["splits"][split]["count"]
    count = 0
    for tar in tars:
        for record in iter_shard(tar):
            count += 1
            yield record
    if count != expected:
        raise ShardError(f"{Path(out_dir) / MANIFEST}: split {split!r} lists {expected} records, "
                         f"the shards hold {count}; {_PREPARE_HINT}")
