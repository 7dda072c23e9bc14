"""Parse a data set and pack it into tar shards with a manifest (docs/ARCHITECTURE.md, "Shard format").

Shapes: N people, K joints.

``prepare(name, out, source=...)`` runs: sources (``sources``: a folder, archives to extract, downloads,
or the generated data set) -> ``read`` -> per image: read the JPEG, check it (``jpeg``), and for each
person cut the *pre-crop* region (``precrop``), scale it down to the resolution the recipe needs and
re-encode it (or keep the original bytes with ``precrop=False``) -> one record per person (``shards.encode_record``) -> ``ShardWriter`` per split ->
``manifest.json`` last. Images stream through a small pool of threads with a bounded window, so peak
memory does not grow with the data set. Everything is built in a temporary folder of the output folder
and swapped in when complete (``workspace``).

Per-person problems (missing, corrupt or truncated image, no annotated joint inside the image) are
skipped, counted in ``manifest["skipped"]`` and warned about; joints outside the image are kept (the
crop gives them weight 0) and counted in ``manifest["warnings"]``. File-level problems raise
``DatasetError`` naming the file.
"""
from __future__ import annotations

import collections
import contextlib
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deeppose_fast import __version__
from deeppose_fast.datasets import shards, synthetic
from deeppose_fast.datasets.base import DTF_SEED, NAMES, DatasetError, DatasetWarning, PoseData
from deeppose_fast.datasets.download import ARCHIVES
from deeppose_fast.datasets.jpeg import check_jpeg, exif_orientation
from deeppose_fast.datasets.precrop import PrecropRule
from deeppose_fast.datasets.reader import read
from deeppose_fast.datasets.sources import annotation_sums, archive_stem, check_sources, resolve_sources
from deeppose_fast.datasets.workspace import Workspace

SKIP_MISSING_IMAGE = "missing image"
SKIP_CORRUPT_IMAGE = "corrupt, truncated or non-JPEG image"
SKIP_OUTSIDE = "no annotated joint inside the image"
WARN_OUTSIDE = "annotated joints outside the image (kept)"
# DALI's decoders rotate by EXIF orientation unless adjust_orientation=False; annotations refer to the
# stored pixel grid. Pre-crops are re-encoded without EXIF, original bytes keep it.
WARN_EXIF = "original JPEGs with an EXIF orientation tag (decode them with adjust_orientation=False)"


@dataclass
class _Outcome:
    records: list  # (person index, jpeg bytes, pose (K, 4), meta (10,))
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
        scale = (1.0, 1.0)
        if rule.enabled:
            x0, y0, x1, y1 = region
            pixels = image[y0:y1, x0:x1]
            w2, h2 = rule.stored_size(joints, region, width, height)
            if (w2, h2) != (x1 - x0, y1 - y0):
                # area averaging: the downscale's anti-aliasing filter; the exact ratio is recorded
                pixels = cv2.resize(pixels, (w2, h2), interpolation=cv2.INTER_AREA)
                scale = (w2 / (x1 - x0), h2 / (y1 - y0))
            ok, enc = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, rule.jpeg_quality])
            if not ok:  # pragma: no cover - OpenCV encodes any non-empty uint8 image
                raise RuntimeError(f"{path}: OpenCV could not encode the region {region}")
            jpeg = enc.tobytes()
        else:
            x0 = y0 = 0
            jpeg = raw
        pose, meta = shards.encode_record(joints, data.visible[p], data.head_box[p], (x0, y0), p, data.image_ids[p],
                                          scale)
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
        "precrop": rule.to_dict(),
        "synthetic": generator,
    }


def prepare(name: str, out: str | os.PathLike, *, source=None, download: bool = False,
            base_url: str | None = None, split_mode: str = "person", seed: int = DTF_SEED,
            records_per_shard: int = shards.DEFAULT_RECORDS_PER_SHARD, rule: PrecropRule = PrecropRule(),
            workers: int = 2, num_images: int | None = None, scale: str = "small",
            synthetic_seed: int = 0, progress: bool = True, replace: bool = False) -> dict:
    """Prepare a data set into ``out``: shards + ``manifest.json``. Returns the manifest.

    The new data set is built in ``out/.prepare-tmp-HOST-PID/`` and swapped in when complete (shards,
    then the manifest); until then an earlier data set in ``out`` stays as it was, and a failure or
    Ctrl-C leaves nothing of the run behind (downloads excepted: they resume). Files prepare did not
    write (not listed by the old manifest) are never deleted. ``out`` may hold unrelated files; it is
    refused when it holds another data set (see ``Workspace.check``) unless ``replace``.

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
        num_images, scale, synthetic_seed: the generated data set (``synthetic`` only, generated
            into ``out/raw`` unless ``source`` is given): ``synthetic.SCALES`` size, overridden by
            ``num_images``, and the generator's seed.
        progress: progress bars on stderr.
        replace: replace another data set in ``out`` (and files named like its shards).
    Raises:
        DatasetError: a missing, unreadable or malformed input, an unwritable ``out``, or an ``out``
            holding something the run would lose (the message names it and the way out).
    """
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(NAMES)}")
    generated = name == "synthetic" and not source
    if generated and download:
        raise DatasetError("synthetic: there is nothing to download; it is generated")
    if generated and scale not in synthetic.SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {sorted(synthetic.SCALES)}")
    folder, archives = (None, []) if generated else check_sources(name, source, download)
    out = Path(out).expanduser().resolve()
    start = time.time()
    downloads = [Path(a.filename) for a in ARCHIVES.get(name, ())] if download else []
    raw_targets = [out / "raw"] if generated else [out / "raw" / archive_stem(a) for a in archives + downloads]
    params = {"format": "mpii", "scale": scale, "num_images": num_images, "seed": int(synthetic_seed)}
    settings = _settings(name, split_mode, seed, rule, folder or out / "raw",
                         {k: params[k] for k in ("scale", "num_images", "seed")} if name == "synthetic" else None)
    with Workspace(out, replace) as ws:
        ws.check(settings, raw_targets)
        root, origin, sums = resolve_sources(ws, name, folder, archives, download=download, base_url=base_url,
                                             generator=params if generated else None, workers=workers,
                                             progress=progress)
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
        manifest = shards.Manifest(
            name=name, splits=packed["splits"], skeleton=skeleton.name, joint_names=skeleton.joint_names,
            flip_pairs=skeleton.flip_pairs, num_joints=skeleton.num_joints, num_people=len(data),
            split_mode=settings["split_mode"], seed=settings["seed"], source_root=settings["source_root"],
            precrop=settings["precrop"], synthetic=settings["synthetic"],
            skipped={**data.skipped, **image_skips}, warnings=packed["warnings"], sources=sums,
            created_by=f"deeppose-fast {__version__} prepare", seconds=round(time.time() - start, 2))
        ws.install(manifest)
    return manifest.to_dict()
