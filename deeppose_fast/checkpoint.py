"""Training checkpoints: one folder per step, written atomically, the last few kept.

Layout of a run folder's checkpoints::

    OUT/checkpoints/ckpt-00001000/state.npz   model and optimiser variables, by position and path
    OUT/checkpoints/ckpt-00001000/meta.json   step, network settings, skeleton, config, data position

A checkpoint is written under ``ckpt-XXXXXXXX.tmp-PID``, flushed to disk, then renamed: a folder named
``ckpt-XXXXXXXX`` is always complete, whatever happens to the writer. Rewriting a step moves the old
folder to ``ckpt-XXXXXXXX.old-PID`` for the moment of the swap, and retention renames a folder to
``ckpt-XXXXXXXX.del-PID`` before deleting it (a half-deleted folder never looks complete). A writer killed mid-write (SIGKILL, power
loss) leaves such folders behind; ``clean_leftovers`` removes them (see there for when), and ``save``
calls it. A checkpoint never holds a NaN or infinite value (``NonFiniteError``). ``meta.json`` holds everything
needed to rebuild the network without the training config (``model``: ``ModelSpec.to_dict()``), so ``eval``/``predict``/``export``
take a checkpoint alone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeppose_fast import model as model_lib
from deeppose_fast.config import SETTINGS as TRAIN_SETTINGS, TrainConfig
from deeppose_fast.specs import ModelSpec

FORMAT = "deeppose-fast-checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d{8})$")
_LEFTOVER = re.compile(r"^(ckpt-\d{8})\.(tmp|old|del)-(\d+)$")  # name, kind, writer PID


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupt or does not fit the network."""


class NonFiniteError(CheckpointError):
    """A variable to be saved holds NaN or infinity (the training diverged); nothing was written."""


@dataclass
class Checkpoint:
    path: Path
    meta: dict
    arrays: dict[str, list[tuple[str, np.ndarray]]]  # group -> [(variable path, value)] in order

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def num_joints(self) -> int:
        return int(self.meta["num_joints"])

    @property
    def model_spec(self) -> ModelSpec:
        """The network it holds: the ``model`` block (``ModelSpec.to_dict()``); a field that an older
        checkpoint lacks takes its default (the network those versions built)."""
        return ModelSpec.from_dict(self.meta["model"])

    @property
    def test_extension(self) -> float:
        """The test crop's box extension of the run that wrote it (its configuration's; settings it does
        not record take their defaults)."""
        saved = self.meta.get("config") or {}
        return TrainConfig.from_dict({k: v for k, v in saved.items() if k in TRAIN_SETTINGS}).test_extension


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def variables_state(variables) -> list[tuple[str, np.ndarray]]:
    """[(path, value)] of Keras variables, in order."""
    return [(getattr(v, "path", getattr(v, "name", str(i))), np.asarray(v.numpy()))
            for i, v in enumerate(variables)]


def first_non_finite(named_arrays) -> str | None:
    """The name of the first floating-point array holding NaN or infinity, None if all are finite.
    ``named_arrays``: iterable of ``(name, array)``."""
    for name, value in named_arrays:
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return name
    return None


def _writer_gone(pid: int) -> bool:
    """Whether the process that named a temporary folder ``...-PID`` is gone, as seen from this host."""
    if pid == os.getpid():
        # This process writes one checkpoint at a time and finishes it before ``save`` returns, so a
        # folder with its PID is from an earlier process that had the same PID (common in containers).
        return True
    if pid <= 0:
        return True  # not a writer's PID (and os.kill(0, ...) would mean the process group)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    except OverflowError:  # larger than any PID
        return True
    return False


def clean_leftovers(ckpt_dir: str | os.PathLike) -> list[str]:
    """Deal with the ``ckpt-X.tmp-PID``, ``.old-PID`` and ``.del-PID`` folders of writers that are gone.

    A ``.tmp`` folder is a checkpoint that was never renamed into place, a ``.del`` one was being
    deleted by the retention rule: both are removed. An ``.old`` folder is
    the previous copy of a step being rewritten: removed when ``ckpt-X`` exists, renamed back to
    ``ckpt-X`` when the writer died between the two renames (it is then the only complete copy).

    When: the writer's PID is not alive on this host (``os.kill(pid, 0)`` fails with
    ``ProcessLookupError``), or is this process's own PID. No age rule: a run folder belongs to one run
    (``train`` refuses a second one), whose only writer is its rank 0, so another live writer on another
    host could only be the same run started twice at once. A PID reused by an unrelated live process
    keeps its folder (the safe side); the next clean after that process ends removes it.

    Returns one line per folder handled (``removed ...`` / ``restored ...``).
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    done = []
    for path in sorted(ckpt_dir.iterdir()):
        m = _LEFTOVER.match(path.name)
        if m is None or not _writer_gone(int(m.group(3))):
            continue
        final = ckpt_dir / m.group(1)
        if m.group(2) == "old" and not final.exists():
            path.rename(final)
            done.append(f"restored {final.name} from {path.name}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}")
    if done:
        _fsync_dir(ckpt_dir)
    return done


def save(ckpt_dir: str | os.PathLike, step: int, groups: dict[str, list], meta: dict,
         keep: int = 3) -> Path:
    """Write ``ckpt_dir/ckpt-<step>`` atomically and delete all but the newest ``keep`` checkpoints
    (never the one just written, even when older-numbered ones are newer by step); leftovers of killed
    writers are cleaned first (``clean_leftovers``).

    Args:
        groups: name -> list of Keras variables (e.g. ``{"model": model.variables,
            "opt_conv": opt.variables}``); restored by position, checked by shape and path.
        meta: JSON-serialisable facts (must include ``num_joints`` and ``model``); ``step`` is added.
    Returns:
        the checkpoint folder.
    Raises:
        NonFiniteError: a variable holds NaN or infinity (named in the message); nothing is written.
    """
    ckpt_dir = Path(ckpt_dir)
    states = {group: variables_state(variables) for group, variables in groups.items()}
    bad = first_non_finite((f"{group} variable {name!r}", value)
                           for group, state in states.items() for name, value in state)
    if bad is not None:
        raise NonFiniteError(f"{ckpt_dir}: {bad} holds NaN or infinity; checkpoint {step} not written")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    clean_leftovers(ckpt_dir)
    final = ckpt_dir / f"ckpt-{step:08d}"
    tmp = ckpt_dir / f"ckpt-{step:08d}.tmp-{os.getpid()}"
    tmp.mkdir()
    arrays, index = {}, {}
    for group, state in states.items():
        index[group] = [p for p, _ in state]
        for i, (_, value) in enumerate(state):
            arrays[f"{group}/{i:04d}"] = value
    with open(tmp / "state.npz", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    full_meta = {**meta, "format": FORMAT, "step": int(step), "variables": index,
                 "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(tmp / "meta.json", "w") as f:
        json.dump(full_meta, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # the same step written twice (e.g. Ctrl-C right after a periodic checkpoint)
        old = ckpt_dir / f"{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync_dir(ckpt_dir)
    for stale in list_checkpoints(ckpt_dir)[:-keep]:
        if stale != final:
            doomed = stale.with_name(f"{stale.name}.del-{os.getpid()}")
            stale.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders in ``ckpt_dir``, oldest first (temporary folders are ignored)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a checkpoint folder, a ``checkpoints`` folder or a run folder (latest)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if (path / "meta.json").exists() or _NAME.match(path.name):
        return path
    for candidate in (path / "checkpoints", path):
        found = list_checkpoints(candidate)
        if found:
            return found[-1]
    raise CheckpointError(f"{path}: holds no checkpoint (expected ckpt-XXXXXXXX folders with meta.json "
                          f"and state.npz, or a run folder with checkpoints/)")


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint (see ``resolve`` for what ``path`` may be); a clear error if it is incomplete
    or corrupt."""
    path = resolve(path)
    meta_file, state_file = path / "meta.json", path / "state.npz"
    for f in (meta_file, state_file):
        if not f.is_file():
            raise CheckpointError(f"{f}: missing; {path} is not a complete checkpoint")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_file}: corrupt JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_file}: not a deeppose-fast checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r})")
    for key in ("step", "num_joints", "model", "variables"):
        if key not in meta:
            raise CheckpointError(f"{meta_file}: missing field {key!r}")
    try:
        with open(state_file, "rb") as f, np.load(f, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        raise CheckpointError(f"{state_file}: corrupt or truncated ({type(e).__name__}: {e})") from None
    arrays = {}
    for group, names in meta["variables"].items():
        arrays[group] = []
        for i, name in enumerate(names):
            key = f"{group}/{i:04d}"
            if key not in raw:
                raise CheckpointError(f"{state_file}: variable {name!r} ({key}) is missing")
            arrays[group].append((name, raw[key]))
    return Checkpoint(path=path, meta=meta, arrays=arrays)


def assign(ckpt: Checkpoint, group: str, variables, strict_names: bool = False) -> None:
    """Assign a group of saved values to ``variables`` by position, checking count and shapes."""
    if group not in ckpt.arrays:
        raise CheckpointError(f"{ckpt.path}: has no {group!r} state (has {sorted(ckpt.arrays)})")
    saved = ckpt.arrays[group]
    variables = list(variables)
    if len(saved) != len(variables):
        raise CheckpointError(f"{ckpt.path}: {group} holds {len(saved)} variables, the network has "
                              f"{len(variables)} (was it written for other network settings?)")
    for (name, value), var in zip(saved, variables):
        vpath = getattr(var, "path", getattr(var, "name", "?"))
        if tuple(value.shape) != tuple(var.shape):
            raise CheckpointError(f"{ckpt.path}: {group} variable {name!r} has shape {value.shape}, the "
                                  f"network's {vpath!r} has {tuple(var.shape)}")
        if strict_names and name != vpath:
            raise CheckpointError(f"{ckpt.path}: {group} variable {name!r} where {vpath!r} was expected")
    for (_, value), var in zip(saved, variables):
        var.assign(value.astype(np.dtype(var.dtype)) if hasattr(var, "dtype") else value)


def build_model(ckpt: Checkpoint, expect_joints: int | None = None, split_groups: bool | None = None):
    """The network a checkpoint was trained with (``model.build(ckpt.model_spec, ...)``), holding its
    weights (``model`` group)."""
    if expect_joints is not None and ckpt.num_joints != expect_joints:
        raise CheckpointError(f"{ckpt.path}: trained for {ckpt.num_joints} joints "
                              f"({ckpt.meta.get('skeleton', '?')}), but the data has {expect_joints}")
    model = model_lib.build(ckpt.model_spec, ckpt.num_joints, split_groups=split_groups)
    assign(ckpt, "model", model.variables)
    return model
