"""Parse a data set and pack it into tar shards with a manifest (docs/ARCHITECTURE.md, "Shard format").

Shapes: N people, K joints.

``prepare(name, out, source=...)`` runs: sources (a folder, archives to extract, or downloads) -> ``read``
-> per image: read the JPEG, check it, and for each person cut the *pre-crop* region and re-encode it
(or keep the original bytes with ``precrop=False``) -> ``ShardWriter`` per split -> ``manifest.json``
last. Images stream through a small pool of threads with a bounded window, so peak memory does not grow
with the data set.

Pre-crop rule (``PrecropRule``): the tight box around the person's annotated joints (widened like
``codec.crop_geometry`` widens degenerate boxes) grown so that every crop of the training recipe fits:
half-sides ``ext_max * (0.5 + shift)`` times the box side for the default recipe (extension up to 2.0,
shift up to 10 % of the crop), more with rotation or zoom-out, plus ``margin`` of the box side and
``margin_px`` pixels, then rounded outwards to whole pixels and clipped to the image. Any crop the
recipe draws, clipped to the image, therefore equals the same crop clipped to the pre-crop, and
coordinates shift by the integer offset only (stored in ``meta``).

Per-person problems (missing, corrupt or truncated image, no annotated joint inside the image) are
skipped, counted in ``manifest["skipped"]`` and warned about; joints outside the image are kept (the
crop gives them weight 0) and counted in ``manifest["warnings"]``. File-level problems raise
``DatasetError`` naming the file.

The output folder (``_Workspace``): everything a run makes (shards, manifest, extracted archives,
generated images) goes into ``OUT/.prepare-tmp-HOST-PID/`` and is renamed into place when complete, the
manifest last; only then are the shards the old manifest listed and prepare's own replaced ``raw/``
copies (marked ``.synthetic.json`` / ``.extracted-from``) removed. So an error or Ctrl-C leaves OUT as it
was, and nothing prepare did not write is ever deleted. OUT may hold unrelated files (they stay); it is
refused before any work when it is not writable, holds another data set (another name, source or
setting in its manifest) or files named like shards that no manifest lists (both allowed with
``replace``), or when a ``raw/`` folder the run would replace was not written by prepare (always).
Downloads go straight to ``OUT/downloads/`` and stay, so that they resume.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import tarfile
import threading
import time
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deeppose_fast import __version__
from deeppose_fast.datasets import (DTF_SEED, NAMES, DatasetError, DatasetWarning, PoseData, read)
from deeppose_fast.datasets import shards
from deeppose_fast.datasets.download import ARCHIVES, fetch_archives, sha256_file
from deeppose_fast.datasets.precrop import PrecropRule

SKIP_MISSING_IMAGE = "missing image"
SKIP_CORRUPT_IMAGE = "corrupt, truncated or non-JPEG image"
SKIP_OUTSIDE = "no annotated joint inside the image"
WARN_OUTSIDE = "annotated joints outside the image (kept)"
# DALI's decoders rotate by EXIF orientation unless adjust_orientation=False; annotations refer to the
# stored pixel grid. Pre-crops are re-encoded without EXIF, original bytes keep it.
WARN_EXIF = "original JPEGs with an EXIF orientation tag (decode them with adjust_orientation=False)"


# JPEG checks -------------------------------------------------------------------------------------
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a JPEG's frame header, without decoding; ValueError if malformed."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError(f"malformed JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF:
            if i + 9 > n:
                break
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            if width == 0 or height == 0:
                raise ValueError("JPEG frame header gives a zero size")
            return width, height
        if marker == 0xDA:
            raise ValueError("JPEG scan starts before any frame header")
        i += 2 + length
    raise ValueError("truncated JPEG (no frame header)")


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1..8) of a JPEG's APP1 segment, 1 when there is none or it is unreadable."""
    i, n = 2, len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:
            break
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\0\0":
            tiff = data[i + 10:i + 2 + length]
            order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
            if order is None or len(tiff) < 8:
                return 1
            ifd = int.from_bytes(tiff[4:8], order)
            count = int.from_bytes(tiff[ifd:ifd + 2], order) if ifd + 2 <= len(tiff) else 0
            for e in range(count):
                entry = tiff[ifd + 2 + 12 * e: ifd + 14 + 12 * e]
                if len(entry) == 12 and int.from_bytes(entry[:2], order) == 0x0112:
                    value = int.from_bytes(entry[8:10], order)
                    return value if 1 <= value <= 8 else 1
            return 1
        i += 2 + length
    return 1


def check_jpeg(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a complete JPEG; ValueError if it is not one or is truncated. Entropy-coded
    data never holds FF D9 (0xFF is stuffed), so a complete file has an end-of-image marker after its
    last start-of-scan."""
    size = jpeg_size(data)
    if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ValueError("truncated JPEG (no end-of-image marker after the last scan)")
    return size


# one image -> records -----------------------------------------------------------------------------
@dataclass
class _Outcome:
    records: list  # (person index, jpeg bytes, pose (K, 4), meta (8,))
    skipped: dict
    outside: int  # annotated joints outside the image, over the kept people
    rotated: int = 0  # 1 if original bytes with an EXIF orientation other than 1 were stored


def _process_image(path: str, people: np.ndarray, data: PoseData, rule: PrecropRule) -> _Outcome:
    n = len(people)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return _Outcome([], {SKIP_MISSING_IMAGE: n}, 0)
    except OSError:
        return _Outcome([], {SKIP_CORRUPT_IMAGE: n}, 0)
    try:
        width, height = check_jpeg(raw)
    except ValueError:
        return _Outcome([], {SKIP_CORRUPT_IMAGE: n}, 0)
    image = None
    if rule.enabled:
        # the annotations refer to the stored pixel grid: do not apply EXIF orientation
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    else:  # validate the entropy data cheaply: a 1/8-scale decode
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if image is None or (rule.enabled and image.shape[:2] != (height, width)):
        return _Outcome([], {SKIP_CORRUPT_IMAGE: n}, 0)
    records, skipped, outside = [], {}, 0
    k = data.skeleton.num_joints
    for p in people:
        joints = data.joints[p]
        annotated = np.isfinite(joints).all(axis=1)
        inside = annotated & (joints[:, 0] >= 0) & (joints[:, 0] <= width) \
            & (joints[:, 1] >= 0) & (joints[:, 1] <= height)
        region = rule.region(joints, width, height) if inside.any() else None
        if region is None:
            skipped[SKIP_OUTSIDE] = skipped.get(SKIP_OUTSIDE, 0) + 1
            continue
        outside += int(annotated.sum() - inside.sum())
        if rule.enabled:
            x0, y0, x1, y1 = region
            ok, enc = cv2.imencode(".jpg", image[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, rule.jpeg_quality])
            if not ok:  # pragma: no cover - OpenCV encodes any non-empty uint8 image
                raise RuntimeError(f"{path}: OpenCV could not encode the region {region}")
            jpeg = enc.tobytes()
        else:
            x0 = y0 = 0
            jpeg = raw
        pose = np.zeros((k, 4), np.float32)
        pose[annotated, 0] = joints[annotated, 0] - np.float32(x0)
        pose[annotated, 1] = joints[annotated, 1] - np.float32(y0)
        pose[:, 2] = annotated
        pose[:, 3] = data.visible[p] & annotated
        head = data.head_box[p] - np.array([x0, y0, x0, y0], np.float32)
        meta = np.array([*head, x0, y0, p, data.image_ids[p]], np.float32)
        records.append((int(p), jpeg, pose, meta))
    rotated = int(not rule.enabled and bool(records) and exif_orientation(raw) != 1)
    return _Outcome(records, skipped, outside, rotated)


def _image_groups(data: PoseData):
    """Runs of consecutive people sharing an image: yields (path, (M,) person indices)."""
    paths = data.image_paths
    if len(paths) == 0:
        return
    starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]])
    ends = np.r_[starts[1:], len(paths)]
    for s, e in zip(starts, ends):
        yield str(paths[s]), np.arange(s, e)


def pack(data: PoseData, out: str | os.PathLike, *, rule: PrecropRule = PrecropRule(),
         records_per_shard: int = shards.DEFAULT_RECORDS_PER_SHARD, workers: int = 2,
         progress: bool = True) -> dict:
    """Write the shards of ``data`` into ``out`` (no manifest). Returns ``{"splits", "skipped",
    "warnings"}`` for the manifest. ``out`` should be a new folder (``prepare`` packs into its temporary
    folder and swaps the result in): shards of the same names are overwritten, nothing else is touched.
    On any exception (Ctrl-C included) the shards written so far are removed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, int] = {}
    outside = rotated = 0
    window = max(1, 4 * workers)
    with contextlib.ExitStack() as stack:
        writers = {s: stack.enter_context(shards.ShardWriter(out, s, records_per_shard)) for s in ("train", "test")}
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, workers)))
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)  # on Ctrl-C: drop queued work
        bar = stack.enter_context(tqdm(total=len(data), unit="person", desc=f"packing {data.name}",
                                       disable=not progress, leave=False))
        pending = collections.deque()
        groups = _image_groups(data)

        def drain_one():
            nonlocal outside, rotated
            result = pending.popleft().result()
            for p, jpeg, pose, meta in result.records:
                writers[data.split[p]].write(p, jpeg, pose, meta)
            for reason, count in result.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
            outside += result.outside
            rotated += result.rotated
            bar.update(len(result.records) + sum(result.skipped.values()))

        for path, people in groups:
            pending.append(pool.submit(_process_image, path, people, data, rule))
            if len(pending) >= window:
                drain_one()
        while pending:
            drain_one()
    # the writers closed their last shards on leaving the block
    splits = {s: w.summary() for s, w in writers.items()}
    notes = {WARN_OUTSIDE: outside, WARN_EXIF: rotated}
    return {"splits": splits, "skipped": skipped, "warnings": {k: v for k, v in notes.items() if v}}


# the output folder ---------------------------------------------------------------------------------
TMP_PREFIX = ".prepare-tmp-"
SYNTHETIC_MARKER = ".synthetic.json"  # in raw/ when prepare generated it: the generator's parameters
EXTRACTED_MARKER = ".extracted-from"  # in raw/<archive stem>/ when prepare extracted it: the sha256
_SHARD_FILE = re.compile(r"(?:train|test)-\d{5}\.(?:tar|idx)")


def _listed_files(manifest: dict) -> set[str]:
    """The shard and index names a manifest lists. Only names of the shard format count, so a damaged or
    foreign manifest can never point the clean-up at anything else."""
    names = set()
    splits = manifest.get("splits")
    for entry in splits.values() if isinstance(splits, dict) else ():
        for name in entry.get("shards", ()) if isinstance(entry, dict) else ():
            if isinstance(name, str) and _SHARD_FILE.fullmatch(name):
                names |= {name, shards.index_path(name).name}
    return names


def _written_by_prepare(folder: Path) -> bool:
    """True for a folder prepare generated (``.synthetic.json``) or extracted (``.extracted-from``), one
    holding only such extracted folders (``raw/`` of archives), or an empty one."""
    if (folder / SYNTHETIC_MARKER).is_file() or (folder / EXTRACTED_MARKER).is_file():
        return True
    return all(child.is_dir() and (child / EXTRACTED_MARKER).is_file() for child in folder.iterdir())


def _differences(old: dict, new: dict) -> list[str]:
    """``key old -> new`` for each entry of ``new`` that ``old`` records differently (dicts key by key)."""
    found = []
    for key, b in new.items():
        a = old.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += [f"{key}.{k} {a.get(k)!r} -> {b.get(k)!r}" for k in {**a, **b} if a.get(k) != b.get(k)]
        elif a != b:
            found.append(f"{key} {a!r} -> {b!r}")
    return found


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def _sigint_held_off():
    """Ignore Ctrl-C during a few renames that must not stop half-way (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Workspace:
    """One run's view of the output folder ``out`` and its temporary folder ``out/.prepare-tmp-HOST-PID``
    (on the same file system, so swapping the result in is a few renames).

    Entering creates the missing folders and the temporary one, which checks that ``out`` is writable
    before any work; ``check`` refuses what the run would lose; everything new is written under ``tmp``
    and listed in ``moves``; ``install`` swaps it in. Leaving removes ``tmp`` (with what ``install``
    replaced) and, after a failure or Ctrl-C, the folders this run created, so nothing of it remains.
    A file counts as written by prepare only if the old manifest lists it, or it is under ``tmp``.
    """

    def __init__(self, out: Path, replace: bool):
        self.out, self.replace = out, replace
        self.tmp = out / f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}"
        self.created: list[Path] = []  # folders this run made, outermost first
        self.old: dict = {}  # the manifest already in ``out``
        self.moves: list[tuple[Path, Path]] = []  # (new folder under tmp, its place in out)

    def __enter__(self) -> "_Workspace":
        if self.out.exists() and not self.out.is_dir():
            raise DatasetError(f"{self.out}: --out is a file, not a folder; choose another --out")
        missing = list(itertools.takewhile(lambda p: not p.is_dir(), [self.out, *self.out.parents]))
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self.created.append(folder)
            self.tmp.mkdir()
        except OSError as e:
            self._remove_created()
            raise DatasetError(f"{self.out}: cannot write the output folder ({e.strerror or e}); choose "
                               f"another --out or make it writable") from None
        self._remove_stale_temporaries()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if exc_type is not None:
            self._remove_created()
        return False

    def make_dir(self, folder: Path) -> Path:
        """``folder`` (under ``out``), created if missing and then removed again after a failure if empty."""
        if not folder.is_dir():
            folder.mkdir()
            self.created.append(folder)
        return folder

    def _remove_created(self) -> None:
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):  # only when empty: kept downloads stay, with their folders
                folder.rmdir()

    def _remove_stale_temporaries(self) -> None:
        """Temporary folders of killed runs on this machine (their process is gone) are removed."""
        mine = f"{TMP_PREFIX}{socket.gethostname()}-"
        for folder in self.out.glob(f"{TMP_PREFIX}*"):
            pid = folder.name[len(mine):] if folder.name.startswith(mine) else ""
            if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    def check(self, settings: dict, raw_targets: list[Path]) -> None:
        """Refuse, before any work, what the run would otherwise lose or mix up.

        Args:
            settings: the new manifest's identity (``_settings``); another manifest in ``out`` (another
                name, source or setting; or one this version cannot read) is refused unless ``replace``.
            raw_targets: the folders the run may replace with new generated or extracted copies; each
                must be missing or written by prepare (always: ``replace`` does not cover folders).
        Files named like shards that no manifest lists are refused unless ``replace`` (then the new
        shards may overwrite those of the same names). Other files are left alone and never refused.
        """
        path = self.out / shards.MANIFEST
        if path.exists():
            try:
                self.old = json.loads(path.read_text())
                if not isinstance(self.old, dict):
                    raise ValueError(f"a JSON {type(self.old).__name__}, not an object")
            except (OSError, ValueError) as e:  # JSON and Unicode decode errors are ValueErrors
                self.old = {}
                if not self.replace:
                    raise DatasetError(f"{path}: not a manifest this version can read ({e}); pass --replace to "
                                       f"replace what is there, or choose another --out") from None
            differences = _differences(self.old, settings)
            if differences and not self.replace:
                raise DatasetError(f"{self.out}: holds another data set ({'; '.join(differences)}); pass "
                                   f"--replace to replace it, or choose another --out")
        listed = _listed_files(self.old)
        stray = sorted(p.name for p in self.out.iterdir() if _SHARD_FILE.fullmatch(p.name) and p.name not in listed)
        if stray and not self.replace:
            more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
            raise DatasetError(f"{self.out}: holds {', '.join(stray[:3])}{more}, which no manifest lists; move "
                               f"them away, or pass --replace to let the new shards overwrite them")
        for target in raw_targets:
            if target.parent.exists() and not target.parent.is_dir():
                raise DatasetError(f"{target.parent}: a file where this run writes a folder; move it away or "
                                   f"choose another --out")
            if (target.exists() or target.is_symlink()) and not (target.is_dir() and _written_by_prepare(target)):
                raise DatasetError(f"{target}: not written by prepare (no {SYNTHETIC_MARKER} or "
                                   f"{EXTRACTED_MARKER} marker), and this run writes its data there; move it "
                                   f"away or choose another --out")

    def install(self, manifest: dict) -> None:
        """Swap the new data set in: remove the old manifest (the folder is incomplete from here), move
        the new raw/ copies and shards into place, remove the shards only the old manifest listed, and
        put the new manifest in last. Replaced raw/ copies go into ``tmp``, removed with it."""
        shards.write_manifest(self.tmp, manifest)
        new, old = _listed_files(manifest), _listed_files(self.old)
        with _sigint_held_off():
            (self.out / shards.MANIFEST).unlink(missing_ok=True)
            for i, (src, dst) in enumerate(self.moves):
                if dst.exists() or dst.is_symlink():
                    os.replace(dst, self.tmp / f"replaced-{i}")
                dst.parent.mkdir(exist_ok=True)
                os.replace(src, dst)
            for name in sorted(new):
                os.replace(self.tmp / name, self.out / name)
            for name in old - new:
                (self.out / name).unlink(missing_ok=True)
            os.replace(self.tmp / shards.MANIFEST, self.out / shards.MANIFEST)


# sources -------------------------------------------------------------------------------------------
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _archive_kind(path: Path) -> str | None:
    """``"zip"`` or ``"tar"`` by the magic bytes, else by the name (a truncated zip has its local header
    magic ``PK`` but no end record, so ``zipfile.is_zipfile`` says no); None for anything else."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK" or zipfile.is_zipfile(path) or path.name.lower().endswith(".zip"):
        return "zip"
    if tarfile.is_tarfile(path) or path.name.lower().endswith(_ARCHIVE_SUFFIXES):
        return "tar"
    return None


def extract(archive: Path, dest: Path, digest: str, *, progress: bool = False) -> Path:
    """Extract a zip or tar archive into the new folder ``dest`` and mark it with ``.extracted-from``
    (the archive's sha256), the sign that a later run may reuse it. ``dest`` is left half-written on
    failure (``prepare`` extracts into its temporary folder).

    Raises:
        DatasetError: naming the archive: not an archive, unsafe member paths, or a truncated or corrupt
            archive (zip members are checked against their CRC as they are written).
    """
    kind = _archive_kind(archive)
    if kind is None:
        raise DatasetError(f"{archive}: not a zip or tar archive")
    dest.mkdir(parents=True)
    bar = dict(desc=f"extracting {archive.name}", unit="file", disable=not progress, leave=False)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                        raise DatasetError(f"{archive}: unsafe member path {member!r} in the zip archive")
                for info in tqdm(zf.infolist(), **bar):
                    zf.extract(info, dest)
        else:
            with tarfile.open(archive, "r:*") as tf:
                # members streamed as they are read: a compressed tar is decompressed once
                tf.extractall(dest, members=tqdm(tf, **bar), filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the disk, not the archive (gzip's errors have none)
            raise DatasetError(f"{archive}: cannot extract it into {dest.parent} ({e.strerror})") from None
        raise DatasetError(f"{archive}: truncated or corrupt {kind} archive ({e}); get it again") from None
    (dest / EXTRACTED_MARKER).write_text(digest + "\n")
    return dest


def _check_sources(name: str, source, download: bool) -> tuple[Path | None, list[Path]]:
    """``(folder, archives)`` from ``--source`` (one folder, or archives), checked before any work."""
    paths = [Path(s).expanduser().resolve() for s in source or ()]
    for p in paths:
        if not p.exists():
            raise DatasetError(f"{p}: --source does not exist")
    folders = [p for p in paths if p.is_dir()]
    if folders and (len(paths) > 1 or download):
        raise DatasetError(f"--source: give either one folder or archives, not both "
                           f"({', '.join(map(str, paths))}{' and --download' if download else ''})")
    if not paths and not download:
        raise DatasetError(f"{name}: nothing to read: give --source FOLDER or ARCHIVE(s), or --download")
    stems = [_archive_stem(p) for p in paths if not p.is_dir()]
    if len(set(stems)) < len(stems):
        raise DatasetError(f"--source: two archives would extract to the same folder raw/<name> "
                           f"({', '.join(map(str, paths))})")
    return (folders[0] if folders else None), [p for p in paths if not p.is_dir()]


def _read_marker(path: Path):
    """A marker file's JSON or text, None when absent or unreadable."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return text


def _extract_all(ws: _Workspace, archives: list[Path], sums: dict, progress: bool) -> tuple[Path, dict]:
    """Every archive under ``ws.tmp/raw/<stem>``: extracted anew, or a link to the earlier extraction
    in ``out/raw/<stem>`` when its marker holds the archive's sha256 (one folder then holds every part
    for ``read``). Returns that folder and ``{folder in it: archive}`` (to name archives in errors)."""
    root = ws.tmp / "raw"
    root.mkdir()
    origin = {}
    for archive in archives:
        digest = sums.get(archive.name) or sha256_file(archive, progress=progress)
        sums[archive.name] = digest
        here, kept = root / _archive_stem(archive), ws.out / "raw" / _archive_stem(archive)
        if kept.is_dir() and _read_marker(kept / EXTRACTED_MARKER) == digest:
            here.symlink_to(kept, target_is_directory=True)
        else:
            extract(archive, here, digest, progress=progress)
            ws.moves.append((here, kept))
        origin[here] = archive
    return root, origin


def _generate(ws: _Workspace, params: dict, workers: int | None, progress: bool) -> Path:
    """The synthetic data set in MPII's format: ``out/raw`` when an earlier run generated it with the
    same parameters (its ``.synthetic.json``), else generated into ``ws.tmp/raw`` (moved in at the end)."""
    from deeppose_fast.datasets import synthetic

    kept = ws.out / "raw"
    if kept.is_dir() and _read_marker(kept / SYNTHETIC_MARKER) == params:
        return kept
    root = ws.tmp / "raw"
    # worker processes cost more to start than they save on a few hundred images
    small = params["num_images"] is not None and params["num_images"] < 400
    synthetic.generate(root, "mpii", params["preset"], params["seed"], num_images=params["num_images"],
                       workers=1 if small else workers, progress=progress)
    (root / SYNTHETIC_MARKER).write_text(json.dumps(params) + "\n")
    ws.moves.append((root, kept))
    return root


def annotation_sums(files, root: Path) -> dict[str, str]:
    """``{path: sha256}`` of the annotation files, keyed by their path under ``root`` (``lsp_dataset/
    joints.mat`` and ``lspet_dataset/joints.mat`` are two sources, not one file name), or by the whole
    path for a file outside it."""
    sums, root = {}, root.resolve()  # read() resolves the root it parses
    for f in map(Path, files):
        key = f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f)
        sums[key] = sha256_file(f)
    return sums


def _settings(name: str, split_mode: str, seed: int, rule: PrecropRule, source_root: Path,
              generator: dict | None) -> dict:
    """The manifest entries that make a prepared folder one data set: a re-run that records the same ones
    replaces it without asking; the shard size is layout only and not among them."""
    return {
        "name": name,
        # LSP's split is fixed by image index; MPII's and synthetic's come from a seeded permutation
        "split_mode": {"mpii": split_mode, "synthetic": "image"}.get(name, "fixed"),
        "seed": seed if name in ("mpii", "synthetic") else None,
        "source_root": str(source_root),
        "precrop": asdict(rule),
        "synthetic": generator,
    }


def prepare(name: str, out: str | os.PathLike, *, source=None, download: bool = False,
            base_url: str | None = None, split_mode: str = "person", seed: int = DTF_SEED,
            records_per_shard: int = shards.DEFAULT_RECORDS_PER_SHARD, rule: PrecropRule = PrecropRule(),
            workers: int = 2, num_images: int | None = None, preset: str = "small",
            synthetic_seed: int = 0, progress: bool = True, replace: bool = False) -> dict:
    """Prepare a data set into ``out``: shards + ``manifest.json``. Returns the manifest.

    The new data set is built in ``out/.prepare-tmp-HOST-PID/`` and swapped in when complete (shards,
    then the manifest); until then an earlier data set in ``out`` stays as it was, and a failure or
    Ctrl-C leaves nothing of the run behind (downloads excepted: they resume). Files prepare did not
    write (not listed by the old manifest) are never deleted. ``out`` may hold unrelated files; it is
    refused when it holds another data set (see ``_Workspace.check``) unless ``replace``.

    Args:
        name: one of ``NAMES``.
        out: output folder (shards, manifest; ``raw/`` for extracted archives and generated data,
            ``downloads/`` for downloads).
        source: None, or a list of one folder / one or more archives (zip, tar.gz).
        download: fetch the official archives (``base_url`` / ``$DEEPPOSE_FAST_DATA_URL`` overrides).
        split_mode, seed: see ``datasets.read``.
        records_per_shard: people per tar shard.
        rule: the pre-crop rule (``PrecropRule(enabled=False)`` keeps the original JPEG bytes).
        workers: threads decoding and encoding images (and processes generating them).
        num_images, preset, synthetic_seed: the generated data set (``synthetic`` only, generated
            into ``out/raw`` unless ``source`` is given): ``synthetic.PRESETS`` size, overridden by
            ``num_images``, and the generator's seed.
        progress: progress bars on stderr.
        replace: replace another data set in ``out`` (and files named like its shards).
    Raises:
        DatasetError: a missing, unreadable or malformed input, an unwritable ``out``, or an ``out``
            holding something the run would lose (the message names it and the way out).
    """
    from deeppose_fast.datasets import synthetic

    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(NAMES)}")
    generated = name == "synthetic" and not source
    if generated and download:
        raise DatasetError("synthetic: there is nothing to download; it is generated")
    if generated and preset not in synthetic.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(synthetic.PRESETS)}")
    folder, archives = (None, []) if generated else _check_sources(name, source, download)
    out = Path(out).expanduser().resolve()
    start = time.time()
    downloads = [Path(a.filename) for a in ARCHIVES.get(name, ())] if download else []
    raw_targets = [out / "raw"] if generated else [out / "raw" / _archive_stem(a) for a in archives + downloads]
    params = {"format": "mpii", "preset": preset, "num_images": num_images, "seed": int(synthetic_seed)}
    settings = _settings(name, split_mode, seed, rule, folder or out / "raw",
                         {k: params[k] for k in ("preset", "num_images", "seed")} if name == "synthetic" else None)
    with _Workspace(out, replace) as ws:
        ws.check(settings, raw_targets)
        sums, origin = {}, {}
        if generated:
            root = _generate(ws, params, workers, progress)
        elif folder is not None:
            root = folder
        else:
            if download:
                sums = fetch_archives(name, ws.make_dir(out / "downloads"), base_url=base_url, progress=progress)
                archives += [out / "downloads" / n for n in sums]
            root, origin = _extract_all(ws, archives, sums, progress)
        if progress:  # scipy's loadmat reports no progress; MPII's file takes tens of seconds
            print(f"parsing the {name} annotations ...", file=sys.stderr, flush=True)
        try:
            data = read(name, root, split_mode=split_mode, seed=seed)
        except DatasetError as e:
            message = str(e)
            for here, archive in origin.items():  # name the archive, not the temporary copy
                message = message.replace(str(here), str(archive))
            raise DatasetError(message) from None
        sums.update(annotation_sums(data.annotation_files, root))
        packed = pack(data, ws.tmp, rule=rule, records_per_shard=records_per_shard, workers=workers,
                      progress=progress)
        image_skips = packed["skipped"]
        where = f"{name} ({settings['source_root']})"
        for reason, count in image_skips.items():
            warnings.warn(f"{where}: skipped {count} people: {reason}", DatasetWarning, stacklevel=2)
        for reason, count in packed["warnings"].items():
            warnings.warn(f"{where}: {count} {reason}", DatasetWarning, stacklevel=2)
        total = sum(s["count"] for s in packed["splits"].values())
        if total == 0:
            raise DatasetError(f"{settings['source_root']}: no person could be packed (skipped: {image_skips})")
        skeleton = data.skeleton
        manifest = {
            "name": name,
            "skeleton": skeleton.name,
            "joint_names": list(skeleton.joint_names),
            "flip_pairs": [list(p) for p in skeleton.flip_pairs],
            "num_joints": skeleton.num_joints,
            "num_people": len(data),
            "splits": packed["splits"],
            **settings,
            "skipped": {**data.skipped, **image_skips},
            "warnings": packed["warnings"],
            "sources": sums,
            "pixel_convention": "continuous: pixel (i, j) covers [i, i+1) x [j, j+1), centre at +0.5",
            "created_by": f"deeppose-fast {__version__} prepare",
            "seconds": round(time.time() - start, 2),
        }
        ws.install(manifest)
    return manifest
