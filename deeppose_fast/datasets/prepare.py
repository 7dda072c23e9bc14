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
"""
from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import shutil
import tarfile
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deeppose_fast import __version__
from deeppose_fast.datasets import (DTF_SEED, NAMES, DatasetError, DatasetWarning, PoseData, read)
from deeppose_fast.datasets import shards
from deeppose_fast.datasets.download import fetch_archives, sha256_file

SKIP_MISSING_IMAGE = "missing image"
SKIP_CORRUPT_IMAGE = "corrupt, truncated or non-JPEG image"
SKIP_OUTSIDE = "no annotated joint inside the image"
WARN_OUTSIDE = "annotated joints outside the image (kept)"
# DALI's decoders rotate by EXIF orientation unless adjust_orientation=False; annotations refer to the
# stored pixel grid. Pre-crops are re-encoded without EXIF, original bytes keep it.
WARN_EXIF = "original JPEGs with an EXIF orientation tag (decode them with adjust_orientation=False)"
MIN_ASPECT = 0.25  # as codec.MIN_ASPECT: degenerate boxes are widened the same way
MIN_SIDE = 1.0



@dataclass(frozen=True)
class PrecropRule:
    """How large a region around each person is kept (see the module docstring).

    Attributes:
        enabled: False keeps the original JPEG bytes (offset 0).
        ext_max: the largest box extension of any recipe (DTF: 2.0).
        shift: the largest shift as a fraction of the crop size (DTF: 0.1).
        rotation: the largest rotation in degrees the region must allow (DTF: 0).
        scale_jitter: the largest zoom-out ``j`` (scale ``1 - j``) the region must allow (DTF: 0).
        margin: extra fraction of the box side on each side; margin_px: extra pixels on each side.
        jpeg_quality: quality of the re-encoded region.
    """

    enabled: bool = True
    ext_max: float = 2.0
    shift: float = 0.1
    rotation: float = 0.0
    scale_jitter: float = 0.0
    margin: float = 0.05
    margin_px: int = 2
    jpeg_quality: int = 95

    def region(self, joints: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The pre-crop ``x0, y0, x1, y1`` (integers, clipped to the image) for one person.

        Args:
            joints: (K, 2) continuous pixels, NaN where not annotated (at least one annotated).
            width, height: the image size.
        Returns:
            the region, or None when it is empty after clipping (the person lies outside the image).
        """
        valid = np.isfinite(joints).all(axis=1)
        xs, ys = joints[valid, 0].astype(np.float64), joints[valid, 1].astype(np.float64)
        cx, cy = 0.5 * (xs.min() + xs.max()), 0.5 * (ys.min() + ys.max())
        bw0, bh0 = xs.max() - xs.min(), ys.max() - ys.min()
        bw = max(bw0, MIN_ASPECT * bh0, MIN_SIDE)
        bh = max(bh0, MIN_ASPECT * bw0, MIN_SIDE)
        cw, ch = bw * self.ext_max, bh * self.ext_max
        sin = math.sin(math.radians(min(abs(self.rotation), 90.0)))
        zoom = 1.0 / max(1.0 - self.scale_jitter, 1e-3)
        # rotated crop's bounding half-extent (|cos| <= 1), enlarged by zoom-out, plus the centre shift
        hx = 0.5 * (cw + ch * sin) * zoom + self.shift * cw + self.margin * bw + self.margin_px
        hy = 0.5 * (ch + cw * sin) * zoom + self.shift * ch + self.margin * bh + self.margin_px
        x0, x1 = max(math.floor(cx - hx), 0), min(math.ceil(cx + hx), width)
        y0, y1 = max(math.floor(cy - hy), 0), min(math.ceil(cy + hy), height)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1


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
    "warnings"}`` for the manifest. Removes shards of earlier runs first; on any exception (Ctrl-C
    included) the shards written so far are removed, and no manifest exists."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / shards.MANIFEST).unlink(missing_ok=True)
    for old in [*out.glob("train-*.tar"), *out.glob("test-*.tar"), *out.glob("train-*.idx"),
                *out.glob("test-*.idx")]:
        old.unlink()
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


# sources -------------------------------------------------------------------------------------------
def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def extract(archive: Path, dest_root: Path, digest: str) -> Path:
    """Extract a zip or tar archive into ``dest_root/<stem>`` (written aside, renamed when complete;
    skipped when an earlier extraction of the same archive, by sha256, is there)."""
    target = dest_root / _archive_stem(archive)
    marker = target / ".extracted-from"
    if marker.is_file() and marker.read_text().strip() == digest:
        return target
    tmp = dest_root / f".{target.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                        raise DatasetError(f"{archive}: unsafe member path {member!r} in the zip archive")
                bad = zf.testzip()
                if bad is not None:
                    raise DatasetError(f"{archive}: member {bad!r} fails its CRC check (corrupt archive)")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                tf.extractall(tmp, filter="data")
        else:
            raise DatasetError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"{archive}: truncated or corrupt archive ({e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".extracted-from").write_text(digest + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_sources(name: str, out: Path, source: list | tuple | None, download: bool,
                    base_url: str | None, progress: bool) -> tuple[Path, dict]:
    """The folder to parse, and ``{archive name: sha256}`` of the archives it came from."""
    sums: dict[str, str] = {}
    archives: list[Path] = []
    if download:
        sums = fetch_archives(name, out / "downloads", base_url=base_url, progress=progress)
        archives = [out / "downloads" / n for n in sums]
    if source:
        paths = [Path(s).expanduser().resolve() for s in source]
        for p in paths:
            if not p.exists():
                raise DatasetError(f"{p}: --source does not exist")
        folders = [p for p in paths if p.is_dir()]
        if folders and (len(paths) > 1 or archives):
            raise DatasetError(f"--source: give either one folder or archives, not both "
                               f"({', '.join(map(str, paths))})")
        if folders:
            return folders[0], sums
        archives += paths
    if not archives:
        raise DatasetError(f"{name}: nothing to read: give --source FOLDER or ARCHIVE(s), or --download")
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for archive in archives:
        digest = sums.get(archive.name) or sha256_file(archive)
        sums[archive.name] = digest
        extract(archive, raw, digest)
    return raw, sums


def write_synthetic(raw: Path, preset: str, num_images: int | None, seed: int, workers: int | None) -> Path:
    """Generate the synthetic data set in MPII's official format into ``raw`` with
    ``synthetic.generate`` (reused when an earlier run with the same preset, size and seed completed;
    written aside and renamed, so an interrupted run is not reused)."""
    from deeppose_fast.datasets import synthetic

    if preset not in synthetic.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(synthetic.PRESETS)}")
    params = {"format": "mpii", "preset": preset, "num_images": num_images, "seed": int(seed)}
    marker = raw / ".synthetic.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == params:
                return raw
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    tmp = raw.with_name(f".{raw.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # worker processes cost more to start than they save on a few hundred images
        small = num_images is not None and num_images < 400
        synthetic.generate(tmp, "mpii", preset, seed, num_images=num_images, workers=1 if small else workers)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".synthetic.json").write_text(json.dumps(params) + "\n")
    shutil.rmtree(raw, ignore_errors=True)
    os.replace(tmp, raw)
    return raw


def prepare(name: str, out: str | os.PathLike, *, source=None, download: bool = False,
            base_url: str | None = None, split_mode: str = "person", seed: int = DTF_SEED,
            records_per_shard: int = shards.DEFAULT_RECORDS_PER_SHARD, rule: PrecropRule = PrecropRule(),
            workers: int = 2, num_images: int | None = None, preset: str = "small",
            synthetic_seed: int = 0, progress: bool = True) -> dict:
    """Prepare a data set into ``out``: shards + ``manifest.json``. Returns the manifest.

    Args:
        name: one of ``NAMES``.
        out: output folder (shards, manifest; ``raw/`` for extracted archives and generated data,
            ``downloads/`` for downloads).
        source: None, or a list of one folder / one or more archives (zip, tar.gz).
        download: fetch the official archives (``base_url`` / ``$DEEPPOSE_FAST_DATA_URL`` overrides).
        split_mode, seed: see ``datasets.read``.
        records_per_shard: people per tar shard.
        rule: the pre-crop rule (``PrecropRule(enabled=False)`` keeps the original JPEG bytes).
        workers: threads decoding and encoding images.
        num_images, preset, synthetic_seed: the generated data set (``synthetic`` only, generated
            into ``out/raw`` unless ``source`` is given): ``synthetic.PRESETS`` size, overridden by
            ``num_images``, and the generator's seed.
    """
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(NAMES)}")
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    if name == "synthetic" and not source:
        if download:
            raise DatasetError("synthetic: there is nothing to download; it is generated")
        root, sums = write_synthetic(out / "raw", preset, num_images, synthetic_seed, workers), {}
    else:
        root, sums = resolve_sources(name, out, source, download, base_url, progress)
    data = read(name, root, split_mode=split_mode, seed=seed)
    for f in data.annotation_files:
        sums[Path(f).name] = sha256_file(f)
    packed = pack(data, out, rule=rule, records_per_shard=records_per_shard, workers=workers,
                  progress=progress)
    image_skips = packed["skipped"]
    where = f"{name} ({root})"
    for reason, count in image_skips.items():
        warnings.warn(f"{where}: skipped {count} people: {reason}", DatasetWarning, stacklevel=2)
    for reason, count in packed["warnings"].items():
        warnings.warn(f"{where}: {count} {reason}", DatasetWarning, stacklevel=2)
    total = sum(s["count"] for s in packed["splits"].values())
    if total == 0:
        raise DatasetError(f"{root}: no person could be packed (skipped: {image_skips})")
    skeleton = data.skeleton
    manifest = {
        "name": name,
        "skeleton": skeleton.name,
        "joint_names": list(skeleton.joint_names),
        "flip_pairs": [list(p) for p in skeleton.flip_pairs],
        "num_joints": skeleton.num_joints,
        "num_people": len(data),
        "splits": packed["splits"],
        # LSP's split is fixed by image index; MPII's and synthetic's come from a seeded permutation
        "split_mode": {"mpii": split_mode, "synthetic": "image"}.get(name, "fixed"),
        "seed": seed if name in ("mpii", "synthetic") else None,
        "skipped": {**data.skipped, **image_skips},
        "warnings": packed["warnings"],
        "sources": sums,
        "source_root": str(root),
        "precrop": asdict(rule),
        "pixel_convention": "continuous: pixel (i, j) covers [i, i+1) x [j, j+1), centre at +0.5",
        "created_by": f"deeppose-fast {__version__} prepare",
        "seconds": round(time.time() - start, 2),
    }
    if name == "synthetic":
        manifest["synthetic"] = {"preset": preset, "num_images": num_images, "seed": synthetic_seed}
    shards.write_manifest(out, manifest)
    return manifest
