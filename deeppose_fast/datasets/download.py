"""Resumable downloads of the official archives, with a completeness check and sha256.

``download(url, folder)`` writes ``folder/<file>.part`` and resumes it with an HTTP ``Range`` request
after a dropped connection (or in a later run), checks the size against ``Content-Length`` /
``Content-Range``, computes the sha256 (and compares it with a known one when given), then renames the
file into place, so a file without ``.part`` is always complete.

The official addresses are in ``ARCHIVES``; ``base_url`` (or the environment variable
``DEEPPOSE_FAST_DATA_URL``) replaces everything before the file name, for mirrors and for tests.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

BASE_URL_ENV = "DEEPPOSE_FAST_DATA_URL"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """An official archive: its address and, where known, its sha256 (None: recorded, not checked)."""

    url: str
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


ARCHIVES = {
    "lsp": (Archive("http://sam.johnson.io/research/lsp_dataset_original.zip"),),
    "lspet": (Archive("http://sam.johnson.io/research/lspet_dataset.zip"),),
    "mpii": (Archive("https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz"),
             Archive("https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1_u12_2.zip")),
}
ARCHIVES["lsp-ext"] = ARCHIVES["lsp"] + ARCHIVES["lspet"]


class DownloadError(RuntimeError):
    """A download failed or its result is wrong; the message names the address and the problem."""


def archive_url(archive: Archive, base_url: str | None = None) -> str:
    """The address to fetch: the official one, or ``base_url/<file name>`` when a base is given
    (argument first, then ``$DEEPPOSE_FAST_DATA_URL``)."""
    base = base_url or os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{archive.filename}" if base else archive.url


BIG_FILE = 256 << 20  # hashing takes seconds from here: worth a progress bar


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK, *, progress: bool = False) -> str:
    """Hex sha256 of a file, read in chunks; with ``progress``, a bar on stderr for files of ``BIG_FILE``
    bytes or more (MPII's images archive takes about a minute)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                                     desc=f"sha256 {Path(path).name}",
                                     disable=not progress or size < BIG_FILE) as bar:
        while block := f.read(chunk):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _total_size(response, offset: int, url: str) -> int | None:
    """The full size of the resource from ``Content-Range`` (206) or ``Content-Length`` (200)."""
    if response.status == 206:
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not m:
            raise DownloadError(f"{url}: partial response without a valid Content-Range header")
        if int(m.group(1)) != offset:
            raise DownloadError(f"{url}: asked to resume at byte {offset}, the server sent from {m.group(1)}")
        return None if m.group(3) == "*" else int(m.group(3))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def download(url: str, folder: str | os.PathLike, *, filename: str | None = None, sha256: str | None = None,
             retries: int = 5, timeout: float = 60.0, progress: bool = True,
             backoff: float = 1.0) -> tuple[Path, str]:
    """Download ``url`` into ``folder`` (resumable), returning ``(path, sha256 hex)``.

    An existing complete file is not fetched again (its sha256 is still computed and checked). The
    ``.part`` file is resumed with ``Range: bytes=<size>-``; a server that ignores ranges (200) makes
    it start over. A connection dropped mid-file is retried up to ``retries`` times in a row (the
    count resets whenever bytes arrive), waiting ``backoff`` seconds times the attempt number.

    Raises:
        DownloadError: HTTP errors, a file that stays short of its announced size, a checksum mismatch.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (filename or url.rsplit("/", 1)[1])
    part = path.with_name(path.name + ".part")
    if not path.is_file():
        _fetch(url, part, retries=retries, timeout=timeout, progress=progress, backoff=backoff)
        os.replace(part, path)
    digest = sha256_file(path, progress=progress)
    if sha256 is not None and digest != sha256.lower():
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise DownloadError(f"{url}: sha256 of the download is {digest}, expected {sha256}; "
                            f"moved it to {bad}")
    return path, digest


def _fetch(url: str, part: Path, *, retries: int, timeout: float, progress: bool, backoff: float) -> None:
    failures = 0
    bar = None
    try:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            request = urllib.request.Request(url, headers={"User-Agent": "deeppose-fast"})
            if offset:
                request.add_header("Range", f"bytes={offset}-")
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and offset:  # range past the end: our .part is complete or wrong
                    total = _range_total(e.headers.get("Content-Range", ""))
                    e.close()
                    if total == offset:
                        return
                    part.unlink()  # longer than the resource: start over
                    continue
                e.close()
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                failures += 1
                if failures > retries:
                    raise DownloadError(f"{url}: cannot connect ({getattr(e, 'reason', e)}) "
                                        f"after {retries} retries") from None
                time.sleep(backoff * failures)
                continue
            with response:
                if response.status == 200 and offset:
                    offset = 0  # the server ignored the range: start over
                total = _total_size(response, offset, url)
                if bar is None and progress:
                    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=part.name[:-5], leave=False)
                elif bar is not None:
                    bar.reset(total=total)
                    bar.update(offset)
                received = 0
                try:
                    with open(part, "ab" if offset else "wb") as f:
                        while block := response.read(CHUNK):
                            f.write(block)
                            received += len(block)
                            if bar is not None:
                                bar.update(len(block))
                except (OSError, http.client.HTTPException, socket.timeout) as e:
                    # dropped mid-file: keep what arrived and resume
                    if received:
                        failures = 0
                    failures += 1
                    if failures > retries:
                        raise DownloadError(f"{url}: connection keeps failing ({e}) at byte "
                                            f"{offset + received} after {retries} retries; run again "
                                            f"to resume from {part}") from None
                    time.sleep(backoff * failures)
                    continue
            size = part.stat().st_size
            if total is None or size == total:
                return
            if size > total:
                part.unlink()
                raise DownloadError(f"{url}: got {size} bytes, more than the announced {total}; "
                                    f"removed {part}")
            failures = 0 if received else failures + 1
            if failures > retries:
                raise DownloadError(f"{url}: the file stays incomplete ({size} of {total} bytes) after "
                                    f"{retries} retries; run again to resume from {part}")
            time.sleep(backoff * failures)
    finally:
        if bar is not None:
            bar.close()


def _range_total(content_range: str) -> int | None:
    m = re.fullmatch(r"bytes \*/(\d+)", content_range.strip())
    return int(m.group(1)) if m else None


def fetch_archives(name: str, folder: str | os.PathLike, *, base_url: str | None = None,
                   progress: bool = True, **kwargs) -> dict[str, str]:
    """Download every official archive of a data set into ``folder``; returns ``{file name: sha256}``."""
    if name not in ARCHIVES:
        raise ValueError(f"no official download for {name!r}; downloadable: {', '.join(sorted(ARCHIVES))}")
    sums = {}
    for archive in ARCHIVES[name]:
        path, digest = download(archive_url(archive, base_url), folder, filename=archive.filename,
                                sha256=archive.sha256, progress=progress, **kwargs)
        sums[path.name] = digest
    return sums
