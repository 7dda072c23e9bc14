"""Running a cascade: stage 1 on the person crops, then each stage s >= 2 on a crop about every joint of the
previous stage's estimate (Toshev & Szegedy 2014, section 3.2).

Legend: N people, K joints, coordinates in source-image pixels.

``predict(chain, data)`` returns every stage's estimates of a split (the chain of checkpoints:
``cascade.links``), ``refine`` runs one stage on the joint crops of a split's records.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from deeppose_fast import checkpoint, codec, scoring
from deeppose_fast import model as model_lib
from deeppose_fast import skeleton as skeleton_lib
from deeppose_fast.cascade.links import CascadeError, Stage, crop_sides
from deeppose_fast.pipeline import joint_crops
from deeppose_fast.pipeline.contract import SplitInfo


def refine(model, table: joint_crops.RecordTable, rows: np.ndarray, pred: np.ndarray, *, sigma: float,
           fallback: np.ndarray, batch_size: int = 128, num_threads: int = 2) -> np.ndarray:
    """One cascade stage: every joint of every person re-estimated from its crop.

    Args:
        model: the stage's network (output pair ``k`` is joint ``k``'s displacement in joint ``k``'s crop;
            a joint-conditioned network is told ``k``).
        table, rows: (N,) the people's records. pred: (N, K, 2) the previous stage's estimates, source
        pixels (finite). sigma, fallback: the crop side (``crop_sides``).
    Returns:
        (N, K, 2) float64 the refined estimates, source pixels.
    """
    n, k = pred.shape[:2]
    offsets = table.offsets()[rows]  # (N, 2)
    sides = crop_sides(pred, skeleton_lib.get(table.info.skeleton), sigma, fallback)  # (N,)
    centres = pred - offsets[:, None, :]  # the record's frame
    joint = np.tile(np.arange(k), n)  # person-major: crop n * K + j is joint j of person n
    draws = np.stack([centres[..., 0].ravel(), centres[..., 1].ravel(), np.repeat(sides, k),
                      np.zeros(n * k), joint], axis=1)
    infer = scoring.inference_fn(model)
    out, done = [], 0
    for batch in joint_crops.crop_batches(table, np.repeat(rows, k), draws, batch_size=batch_size,
                                          input_size=model_lib.input_size(model), num_threads=num_threads):
        own = joint[done:done + len(batch["images"])]
        x = model_lib.model_inputs(model, tf.constant(batch["images"]), tf.constant(own, tf.int32))
        t = infer(x).numpy().reshape(len(own), k, 2)
        t_own = t[np.arange(len(t)), own]  # each crop's own joint
        out.append(codec.decode(t_own[:, None, :], batch["crop_box"])[:, 0])
        done += len(t)
    refined = np.concatenate(out).reshape(n, k, 2)
    return refined + offsets[:, None, :]


def predict(stages: list[Stage], data: str | os.PathLike | SplitInfo, *, extension: float,
            split: str = "test", batch_size: int = 128, limit: int = 0, num_threads: int = 2,
            models: list | None = None, table: joint_crops.RecordTable | None = None) -> list[dict]:
    """Every stage's estimates of a split: a list, stage by stage, of ``scoring.predict_split``'s dicts
    (``pred`` replaced by the stage's; ``targets_pred`` its estimates in the stage-1 crop's frame).

    Stage 1 runs on the test crops of box extension ``extension``; each next stage on the joint crops about
    the previous estimates. ``models``: the first stages' networks already built (the others are built
    from ``stages``); ``table``: the split's records already read."""
    info = scoring.open_split(data, split)
    models = list(models or [])
    models += [checkpoint.build_model(s.ckpt, expect_joints=info.num_joints) for s in stages[len(models):]]
    first = scoring.predict_split(models[0], info, extension=extension, batch_size=batch_size, split=split,
                                  limit=limit, num_threads=num_threads)
    results = [first]
    if len(stages) == 1:
        return results
    table = table or joint_crops.RecordTable(info)
    rows = np.arange(len(first["pred"]))
    person = table.meta[rows, 6].astype(np.int64)
    if not np.array_equal(person, first["person_index"]):  # the two readers disagree on the order
        raise CascadeError(f"{info.shard_dir}: split {split!r}: the shards' records are not in the order the "
                           f"evaluation reads them; {info.rebuild_hint}")
    for stage, model in zip(stages[1:], models[1:]):
        results.append(next_stage(model, table, results[-1], sigma=stage.sigma, batch_size=batch_size,
                                  num_threads=num_threads))
    return results


def next_stage(model, table: joint_crops.RecordTable, previous: dict, *, sigma: float, batch_size: int = 128,
               num_threads: int = 2) -> dict:
    """A stage's predictions from the previous stage's (``predict``'s dicts, of the first N records of
    ``table``): ``pred`` refined (``refine``; the crop side falls back on the stage-1 crop box's longer side),
    ``targets_pred`` its estimates in the stage-1 crop's frame, no ``pose_loss``; the labels unchanged."""
    rows = np.arange(len(previous["pred"]))
    pred = refine(model, table, rows, previous["pred"], sigma=sigma,
                  fallback=previous["crop_box"][:, 2:].max(axis=1), batch_size=batch_size, num_threads=num_threads)
    return {**previous, "pred": pred, "targets_pred": codec.encode(pred, previous["crop_box"]),
            "pose_loss": float("nan")}
