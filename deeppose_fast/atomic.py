"""Atomic writes of small JSON documents (manifests, evaluation results, cascade statistics): the file
holds the old document or the new one, never a part of either, whatever stops the writer."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(doc, path: str | os.PathLike, **dump_args) -> Path:
    """Write ``doc`` to ``path`` as JSON (``json.dump(doc, f, **dump_args)`` plus a final newline): a
    temporary file in the same folder (so the rename stays on one file system), flushed to disk, then
    ``os.replace``; the temporary file is removed on any failure. Creates the parent folders. Returns
    ``path`` as a ``Path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(doc, f, **dump_args)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
