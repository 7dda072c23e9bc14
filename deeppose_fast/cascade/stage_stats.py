"""Fitting stage s+1's displacement statistics from a stage-s run (what ``deeppose-fast cascade-stats RUN``
runs): the run's cascade (stage 1 on the *training* split's evaluation crops, then each later stage, up to
the run's own: ``inference.predict``) gives its estimates; they and the ground truth (source pixels) go to
``statistics.fit``, and the law is saved, with its ``stage_source``, atomically beside the run
(``statistics.default_file(s + 1)``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from deeppose_fast import scoring
from deeppose_fast import skeleton as skeleton_lib
from deeppose_fast.cascade import inference, links, statistics
from deeppose_fast.datasets import shards

SPLIT = "train"  # the statistics describe the errors on the people the next stage is trained on


def stats_table(stats: statistics.DisplacementStats) -> str:
    """One line per joint: the mean and standard deviation of ``d`` (x, y; torso diameters) and the
    number of people used."""
    names = skeleton_lib.get(stats.skeleton).joint_names
    width = max(len("joint"), *(len(n) for n in names))
    lines = [f"{'joint':<{width}}  {'mean x':>9}  {'mean y':>9}  {'std x':>9}  {'std y':>9}  {'count':>5}"]
    std = np.sqrt(np.diagonal(stats.cov, axis1=1, axis2=2))  # (K, 2)
    for j, name in enumerate(names):
        lines.append(f"{name:<{width}}  {stats.mean[j, 0]:>9.4f}  {stats.mean[j, 1]:>9.4f}  "
                     f"{std[j, 0]:>9.4f}  {std[j, 1]:>9.4f}  {int(stats.count[j]):>5d}")
    return "\n".join(lines)


def fit_run(run: str | os.PathLike, data: str | os.PathLike | None = None, *, extension: float | None = None,
            out: str | os.PathLike | None = None, batch_size: int = 128, num_threads: int = 2,
            echo: Callable[[str], None] = print,
            note: Callable[[str], None] | None = None) -> tuple[statistics.DisplacementStats, Path]:
    """Fit and save the displacement law stage s+1 is trained on, from a stage-s run.

    Args:
        run: a run folder (its newest checkpoint) or a checkpoint folder; loaded once.
        data: the prepared data set; None: the one the run recorded (``scoring.recorded_data``).
        extension: the evaluation crop's box extension; None: the run's test extension
            (``Checkpoint.test_extension`` of stage 1: its configuration's, else ``AugmentSpec``'s default).
        out: the statistics file; None: ``run / statistics.default_file(s + 1)``.
        echo: prints the table and the path; note: remarks on the choices made (default: ``echo``).
    Returns:
        the statistics (``source = statistics.stage_source(stage=s + 1, ...)``) and the path written.
    Raises (each a one-line message naming the file):
        checkpoint.CheckpointError: a missing run or checkpoint; scoring.EvaluationError: no data set
        recorded or found; scoring.OutputNotWritable: ``out`` cannot be written (checked before the work);
        pipeline.contract.PipelineError: the data set is missing, damaged or has no train split;
        statistics.StatsError: a joint with too few people to fit.
    """
    ckpt, data = scoring.load_checkpoint(run, data, note or echo)
    stages = links.chain(ckpt)  # stage 1 first; the run's own stage last
    stage = stages[-1].stage + 1
    out = Path(out) if out else Path(run) / statistics.default_file(stage)
    scoring.check_writable(out)
    extension = float(extension if extension is not None else stages[0].ckpt.test_extension)
    info, first_model = scoring.open_for_scoring(stages[0].ckpt, data, SPLIT, (extension,))
    echo(f"checkpoint {ckpt.path} (step {ckpt.step}, stage {stage - 1}), data {data} split {SPLIT}, "
         f"extension {extension:g}")
    preds = inference.predict(stages, info, extension=extension, split=SPLIT, batch_size=batch_size,
                              num_threads=num_threads, models=[first_model])[-1]
    source = statistics.stage_source(stage=stage, checkpoint=ckpt.path, step=ckpt.step, data=data)
    try:
        stats = statistics.fit(preds["pred"], preds["gt"], skeleton_lib.get(info.skeleton), source=source)
    except ValueError as e:
        raise statistics.StatsError(f"{Path(info.shard_dir) / shards.MANIFEST}: split {SPLIT!r}: {e}") from None
    echo(f"stage {stage} displacement statistics, d = (truth - estimate) / torso diameter of the estimate, "
         f"{len(preds['pred'])} people")
    echo(stats_table(stats))
    path = statistics.save(stats, out)
    echo(f"wrote {path}")
    return stats, path
