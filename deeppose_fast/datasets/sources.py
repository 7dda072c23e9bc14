"""Where ``prepare`` reads a data set from (``resolve_sources``): a folder given with ``--source``, the
official archives (given, or downloaded into ``OUT/downloads/``, where they stay so that they resume)
extracted under ``raw/``, or the synthetic data set generated into ``raw/``. An earlier extraction or
generation in ``OUT/raw`` is reused when its marker matches (the archive's sha256, the generator's
parameters). ``annotation_sums`` gives the manifest's checksums of the files parsed."""
from __future__ import annotations

import contextlib
import json
import tarfile
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from deeppose_fast.datasets import shards, synthetic
from deeppose_fast.datasets.base import DatasetError
from deeppose_fast.datasets.download import fetch_archives, sha256_file
from deeppose_fast.datasets.workspace import EXTRACTED_MARKER, SYNTHETIC_MARKER, Workspace

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


def archive_stem(path: Path) -> str:
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


def check_sources(name: str, source, download: bool) -> tuple[Path | None, list[Path]]:
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
    stems = [archive_stem(p) for p in paths if not p.is_dir()]
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


def _extract_all(ws: Workspace, archives: list[Path], sums: dict, progress: bool) -> tuple[Path, dict]:
    """Every archive under ``ws.tmp/raw/<stem>``: extracted anew, or a link to the earlier extraction
    in ``out/raw/<stem>`` when its marker holds the archive's sha256 (one folder then holds every part
    for ``read``). Returns that folder and ``{folder in it: archive}`` (to name archives in errors)."""
    root = ws.tmp / "raw"
    root.mkdir()
    origin = {}
    for archive in archives:
        digest = sums.get(archive.name) or sha256_file(archive, progress=progress)
        sums[archive.name] = digest
        here, kept = root / archive_stem(archive), ws.out / "raw" / archive_stem(archive)
        if kept.is_dir() and _read_marker(kept / EXTRACTED_MARKER) == digest:
            here.symlink_to(kept, target_is_directory=True)
        else:
            extract(archive, here, digest, progress=progress)
            ws.moves.append((here, kept))
        origin[here] = archive
    return root, origin


def _generate(ws: Workspace, params: dict, workers: int | None, progress: bool) -> Path:
    """The synthetic data set in MPII's format: ``out/raw`` when an earlier run generated it with the
    same parameters (its ``.synthetic.json``), else generated into ``ws.tmp/raw`` (moved in at the end)."""
    kept = ws.out / "raw"
    if kept.is_dir() and shards.scale_named(_read_marker(kept / SYNTHETIC_MARKER)) == params:
        return kept
    root = ws.tmp / "raw"
    # worker processes cost more to start than they save on a few hundred images
    small = params["num_images"] is not None and params["num_images"] < 400
    synthetic.generate(root, "mpii", params["scale"], params["seed"], num_images=params["num_images"],
                       workers=1 if small else workers, progress=progress)
    (root / SYNTHETIC_MARKER).write_text(json.dumps(params) + "\n")
    ws.moves.append((root, kept))
    return root


def resolve_sources(ws: Workspace, name: str, folder: Path | None, archives: list[Path], *, download: bool,
                    base_url: str | None, generator: dict | None, workers: int | None,
                    progress: bool) -> tuple[Path, dict, dict]:
    """The folder to parse, from what ``check_sources`` accepted (``folder`` or ``archives``), downloads,
    or ``generator`` (the synthetic data set's parameters, when it is generated).

    Returns:
        ``(root, origin, sums)``: the folder; ``{extracted folder: archive}`` (to name the archive in
        errors rather than the temporary copy); ``{archive name: sha256}`` of the archives used.
    """
    if generator is not None:
        return _generate(ws, generator, workers, progress), {}, {}
    if folder is not None:
        return folder, {}, {}
    sums = {}
    if download:
        sums = fetch_archives(name, ws.make_dir(ws.out / "downloads"), base_url=base_url, progress=progress)
        archives = archives + [ws.out / "downloads" / n for n in sums]
    root, origin = _extract_all(ws, archives, sums, progress)
    return root, origin, sums


def annotation_sums(files, root: Path) -> dict[str, str]:
    """``{path: sha256}`` of the annotation files, keyed by their path under ``root`` (``lsp_dataset/
    joints.mat`` and ``lspet_dataset/joints.mat`` are two sources, not one file name), or by the whole
    path for a file outside it."""
    sums, root = {}, root.resolve()  # read() resolves the root it parses
    for f in map(Path, files):
        key = f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f)
        sums[key] = sha256_file(f)
    return sums
