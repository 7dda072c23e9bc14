"""The output folder of ``prepare`` (``Workspace``): everything a run makes (shards, manifest, extracted
archives, generated images) goes into ``OUT/.prepare-tmp-HOST-PID/`` and is renamed into place when
complete, the manifest last; only then are the shards the old manifest listed and prepare's own replaced
``raw/`` copies (marked ``.synthetic.json`` / ``.extracted-from``) removed. So an error or Ctrl-C leaves
OUT as it was, and nothing prepare did not write is ever deleted. OUT may hold unrelated files (they
stay); it is refused before any work when it is not writable, holds another data set (another name,
source or setting in its manifest) or files named like shards that no manifest lists (both allowed with
``replace``), or when a ``raw/`` folder the run would replace was not written by prepare (always).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import threading
from pathlib import Path

from deeppose_fast.datasets import shards
from deeppose_fast.datasets.base import DatasetError

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


class Workspace:
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

    def __enter__(self) -> "Workspace":
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
            version = self.old.get("format_version")
            if version != shards.FORMAT_VERSION and not self.replace:
                raise DatasetError(f"{self.out}: holds a data set in shard format {version} (this version writes "
                                   f"{shards.FORMAT_VERSION}); pass --replace to rebuild it in the current format")
            old = {**self.old, "synthetic": shards.scale_named(self.old.get("synthetic"))}
            differences = _differences(old, settings)
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

    def install(self, manifest: shards.Manifest) -> None:
        """Swap the new data set in: remove the old manifest (the folder is incomplete from here), move
        the new raw/ copies and shards into place, remove the shards only the old manifest listed, and
        put the new manifest in last. Replaced raw/ copies go into ``tmp``, removed with it."""
        manifest.write(self.tmp)
        new, old = _listed_files(manifest.to_dict()), _listed_files(self.old)
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
