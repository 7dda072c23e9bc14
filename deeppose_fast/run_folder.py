"""A training run's folder (``--out``): the checks made before any work (the folder is free and writable;
a resumed checkpoint fits the configuration) and what rank 0 writes there while training (console lines,
``train.log``, the JSON-lines curves, TensorBoard summaries).

A run folder belongs to one run: a second run into it would overwrite ``config.json``, mix its logs and
curves with the first's, and its checkpoints would compete with the older run's.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tqdm import tqdm

from deeppose_fast import checkpoint, dist
from deeppose_fast.config import TrainConfig, option
from deeppose_fast.specs import ModelSpec


class RunFolderError(ValueError):
    """The run folder (``--out``) cannot take this run: it holds another run, or cannot be written."""


# What a run writes into its folder; any of them means the folder already holds a run.
RUN_FILES = ("checkpoints", "config.json", "train.log", "train_curve.jsonl", "eval_curve.jsonl",
             "tensorboard")
# Network settings a resume may change: they shape no saved variable. Every other ModelSpec field
# (a new one too) must be the checkpoint's.
RESUMABLE_MODEL_FIELDS = ("dropout", "init")
# Training settings outside the network that shape the saved state (the optimiser's slots).
RESUME_FIXED = ("optimizer",)


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse a run folder before any work: one that holds another run (unless resuming it), or that
    cannot be written (read-only, not a folder, unwritable sub-folder or log). Creates ``out``.

    Raises:
        RunFolderError: naming the folder and the fix.
    """
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: exists and is not a folder; choose another --out")
    if not resume:
        found = [name for name in RUN_FILES if (out / name).exists()]
        if found:
            if checkpoint.list_checkpoints(out / "checkpoints"):
                fix = "continue it with --resume, or choose a new --out"
            else:
                fix = "it has no checkpoint to resume from: choose a new --out"
            raise RunFolderError(f"{out}: already holds a training run ({', '.join(found)}); {fix}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        # A scratch file in each folder the run writes into, and its files opened as it opens them
        # (TensorBoard's writer would otherwise fail only later, and with a TensorFlow traceback).
        for folder in (out, out / "checkpoints", out / "tensorboard"):
            if folder.exists():
                with tempfile.TemporaryFile(dir=folder):
                    pass
        for name in ("config.json", "train.log", "train_curve.jsonl", "eval_curve.jsonl"):
            if (out / name).exists():
                with open(out / name, "a"):
                    pass
    except OSError as e:
        raise RunFolderError(f"{out}: cannot write the run there ({e.strerror}: {e.filename or out}); "
                             f"choose a writable --out") from None


def check_resume(ckpt: checkpoint.Checkpoint, cfg: TrainConfig, num_joints: int) -> None:
    """Refuse to resume ``ckpt`` with settings that change the shape of its state, naming what changed:
    the number of joints, the optimiser, and every ``ModelSpec`` field but ``RESUMABLE_MODEL_FIELDS``
    (the checkpoint's ``ModelSpec`` against ``cfg.model``).

    Raises:
        checkpoint.CheckpointError: e.g. "the run was trained with optimizer=adam, this configuration says
            optimizer=adagrad; resume with --optimizer adam or start a new --out".
    """
    if ckpt.num_joints != num_joints:
        raise checkpoint.CheckpointError(f"{ckpt.path}: trained for {ckpt.num_joints} joints, the data "
                                         f"has {num_joints}; resume with the run's data or start a new --out")
    saved_cfg, mine_cfg = ckpt.meta.get("config", {}), cfg.to_dict()
    pairs = [(name, saved_cfg[name], mine_cfg[name]) for name in RESUME_FIXED if name in saved_cfg]
    saved, mine = ckpt.model_spec, cfg.model
    pairs += [(f.name, getattr(saved, f.name), getattr(mine, f.name)) for f in dataclasses.fields(ModelSpec)
              if f.name not in RESUMABLE_MODEL_FIELDS]
    for name, was, now in pairs:
        if was != now:
            raise checkpoint.CheckpointError(
                f"{ckpt.path}: the run was trained with {name}={was}, this configuration says "
                f"{name}={now}; resume with {option(name, was)} or start a new --out")


def on_every_rank(check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0 (the only rank that writes the run folder) and raise its
    ``RunFolderError``, if any, on every rank, so that all stop together."""
    error = None
    if dist.is_root():
        try:
            check()
        except RunFolderError as e:
            error = e
    error = dist.broadcast_object(error, name="run_folder_check")
    if error is not None:
        raise error


class Logger:
    """Rank 0's console, ``train.log``, JSON-lines curve files and TensorBoard summaries (a no-op on
    other ranks)."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.out = out
        self.writer = None
        if enabled:
            out.mkdir(parents=True, exist_ok=True)
            self.writer = tf.summary.create_file_writer(str(out / "tensorboard"))

    def print(self, msg: str) -> None:
        if not self.enabled:
            return
        tqdm.write(msg, file=sys.stdout)
        sys.stdout.flush()
        with open(self.out / "train.log", "a") as f:
            f.write(msg + "\n")

    def jsonl(self, name: str, record: dict) -> None:
        if self.enabled:
            with open(self.out / name, "a") as f:
                f.write(json.dumps(record) + "\n")

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        # tf.summary.scalar needs the tensorboard package; the raw write with the scalars plugin's
        # metadata produces the same event records without it.
        meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()
        with self.writer.as_default(step=step):
            for k, v in values.items():
                if v is not None and np.isfinite(v):
                    tf.summary.write(k, tf.constant(float(v), tf.float32), metadata=meta)
        self.writer.flush()

    def progress_bar(self, cfg: TrainConfig, step: int):
        """The step progress bar (rank 0 with ``progress`` only; a disabled bar elsewhere)."""
        return tqdm(total=cfg.max_steps, initial=step, disable=not (self.enabled and cfg.progress),
                    unit="step", dynamic_ncols=True, file=sys.stderr)
