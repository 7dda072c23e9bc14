"""``read(name, root)``: parse an official data set (or the generated one) from its folder into
``PoseData`` (the parsers of ``lsp`` and ``mpii``, then the checks common to all)."""
from __future__ import annotations

import os
from pathlib import Path

from deeppose_fast.datasets import lsp, mpii
from deeppose_fast.datasets.base import DTF_SEED, NAMES, SPLIT_MODES, DatasetError, PoseData, warn_skipped


def read(name: str, root: str | os.PathLike, *, split_mode: str = "person", seed: int = DTF_SEED) -> PoseData:
    """Parse an official data set from its folder (the layout of the extracted official archives).

    Args:
        name: one of ``NAMES``.
        root: the folder; for ``lsp-ext`` a folder holding both the LSP and the LSPET folders (found by
            their ``joints.mat`` layouts), for ``mpii`` / ``synthetic`` a folder holding the ``.mat``
            file and ``images/`` (at most two levels down).
        split_mode: ``"person"`` (DTF) or ``"image"``; MPII only (LSP's split is fixed by image index,
            ``synthetic`` always splits by image).
        seed: the permutation seed of the MPII / synthetic splits (DTF: 1701).
    Returns:
        a ``PoseData``; people skipped while parsing are counted in ``skipped`` and warned about
        (``DatasetWarning``).
    Raises:
        DatasetError: a missing or malformed file (the message names it), or a data set without people.
    """
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(NAMES)}")
    if split_mode not in SPLIT_MODES:
        raise ValueError(f"split_mode must be one of {SPLIT_MODES}, got {split_mode!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (expected the {name} data set there)")
    if name in ("lsp", "lspet", "lsp-ext"):
        if split_mode != "person":
            raise ValueError(f"{name}: the LSP split is fixed by image index; split_mode must be 'person'")
        data = lsp.read(name, root)
    else:
        data = mpii.read(name, root, split_mode=split_mode, seed=seed)
    if len(data) == 0:
        files = ", ".join(str(f) for f in data.annotation_files) or str(root)
        raise DatasetError(f"{files}: no usable people in the {name} data set "
                           f"(skipped: {data.skipped or 'none'})")
    warn_skipped(data.skipped, f"{name} ({', '.join(Path(f).name for f in data.annotation_files)})")
    return data
