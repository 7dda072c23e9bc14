"""``manifest.json``: the typed ``Manifest`` (read once with ``Manifest.read`` and passed along), its
validated reading and atomic writing, and the ``prepare`` command that rebuilds a folder from it."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeppose_fast import atomic
from deeppose_fast.datasets.shards.format import (PREPARE_HINT, DEFAULT_RECORDS_PER_SHARD, FORMAT_VERSION, MANIFEST,
                                                  NotPreparedError, ShardError, index_path, read_index)


def write_manifest(out_dir: str | os.PathLike, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (temporary file + ``os.replace``). Call it last."""
    out_dir = Path(out_dir)
    if "splits" not in manifest:
        raise ValueError("manifest needs a 'splits' entry: {split: {'count': N, 'shards': [...]}}")
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    return atomic.write_json(manifest, out_dir / MANIFEST, indent=1)


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
        splits: ``{split: {"count": N, "shards": [tar names]}}``.
        name: the data set (``datasets.NAMES``, or a test data set's own name).
        skeleton, joint_names, flip_pairs, num_joints: the joint layout (``deeppose_fast.skeleton``).
        num_people: people parsed (before per-image skips).
        split_mode, seed, source_root, precrop, synthetic: what makes a prepared folder one data set
            (``prepare`` compares them on a re-run); ``precrop`` is ``PrecropRule``'s fields.
        skipped, warnings: reason -> count; sources: annotation or archive path -> sha256.
        pixel_convention, created_by, seconds: provenance.
        extra: entries this version does not know (kept when written again).
    """

    splits: dict
    name: str = ""
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
        for key in ("joint_names", "flip_pairs"):  # JSON lists as tuples, as the skeleton has them
            if isinstance(known.get(key), list):
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
        raise NotPreparedError(f"{out_dir}: no such folder: the data set is not prepared; {PREPARE_HINT}")
    path = out_dir / MANIFEST
    if not path.is_file():
        raise NotPreparedError(f"{path} not found: the data set is not prepared or incomplete; {PREPARE_HINT}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShardError(f"{path}: not valid JSON ({e}); {PREPARE_HINT}") from None
    if not isinstance(manifest, dict):
        raise ShardError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ShardError(f"{path}: shard format {version!r}, this version reads {FORMAT_VERSION}; rebuild it with "
                         f"`{rebuild_command(out_dir, manifest)} --replace`")
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


def rebuild_command(out_dir: str | os.PathLike, manifest: "Manifest | dict") -> str:
    """The ``deeppose-fast prepare`` command that rebuilds ``out_dir`` with the settings its manifest
    records (name, sources, split, generator and pre-crop settings; defaults are left out)."""
    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()

    name = str(manifest.get("name") or "NAME")
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
                                     ("--max-scale-jitter", "scale_jitter", 0.0), ("--min-extension", "ext_min", 1.0),
                                     ("--resolution", "resolution", 227), ("--resolution-margin", "resolution_margin", 0.25)):
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
                return read_index(index_path(out_dir / entry["shards"][0]))[0]
            except (OSError, ValueError, UnicodeDecodeError):
                return None
    largest = max((int(e.get("count", 0)) for e in splits), default=0)
    return largest if largest > DEFAULT_RECORDS_PER_SHARD else None


def rebuild_hint(out_dir: str | os.PathLike, manifest: dict) -> str:
    """``re-run `deeppose-fast prepare ...` to rebuild it`` with the command for this folder."""
    return f"re-run `{rebuild_command(out_dir, manifest)}` to rebuild it"
