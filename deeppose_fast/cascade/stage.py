"""Training a cascade stage s >= 2 with the stage-1 loop (``train.setup`` calls ``prepare`` when
``cfg.stage >= 2``): what differs is only the data and the evaluation.

- ``prepare`` checks, before any work, the stage's inputs: the checkpoint of stage s-1 (``cfg.previous``,
  a run folder or a checkpoint, resolved to one checkpoint, written back into the configuration so that the
  stage's checkpoints name it), its chain down to stage 1, that it was trained on this data set's skeleton,
  and the displacement statistics fitted for exactly that checkpoint and data set (``statistics.load``
  with ``statistics.stage_source``). On resume, the statistics come from the stage's own run folder
  (``OWN_STATS``, written when the run started) and the previous stage is the one recorded.
- ``StageInputs.dataset_factory``: the joint-crop stream (``joint_crops.stage_train_batches``) per data
  segment, as the loop's ``DatasetFactory`` wants it: exact resume and Horovod's per-rank parts as in
  stage 1.
- ``StageInputs.evaluator``: every ``eval_every`` steps, the cascade up to this stage on the test split
  (the earlier stages' estimates computed once), stage s-1's and stage s's tables.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeppose_fast import checkpoint, scoring
from deeppose_fast.cascade import inference, links, statistics
from deeppose_fast.config import TrainConfig, option
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import joint_crops

OWN_STATS = "cascade-stats.json"  # the statistics a stage's run trains on, in its run folder


class StageSetupError(ValueError):
    """A cascade stage cannot start training (the message names the file and the fix)."""


@dataclass
class StageInputs:
    """What a stage's training needs besides the stage-1 loop: the configuration with ``previous``
    resolved, the earlier stages (stage 1 first), the displacement law and (built on first use) the
    training split's records."""

    cfg: TrainConfig
    stages: list[links.Stage]
    stats: statistics.DisplacementStats
    _tables: dict = field(default_factory=dict)

    def table(self, split: str) -> joint_crops.RecordTable:
        if split not in self._tables:
            self._tables[split] = joint_crops.RecordTable(scoring.open_split(self.cfg.data, split))
        return self._tables[split]

    def dataset_factory(self):
        """``(seed, shard_id, num_shards) -> batches`` of joint crops (``train.DatasetFactory``)."""
        cfg = self.cfg

        def make(seed: int, shard_id: int, num_shards: int):
            return joint_crops.stage_train_batches(
                None, self.stats, sigma=cfg.sigma, batch_size=cfg.batch_size, input_size=cfg.model.input_size,
                flip=cfg.augment.flip, seed=seed, shard_id=shard_id, num_shards=num_shards,
                table=self.table("train"), num_threads=cfg.num_threads, joint_weights=cfg.joint_weights)

        return make

    def save_stats(self, out: Path) -> Path:
        """Keep the statistics in the stage's run folder (atomically), where a resume reads them."""
        return statistics.save(self.stats, Path(out) / OWN_STATS)

    def evaluator(self, log):
        """``(model, step) -> None``: the cascade up to this stage on the test split, printed and logged."""
        cfg = self.cfg
        cache: dict = {}

        def run(model, step):
            t0 = time.time()
            info = scoring.open_split(cfg.data, "test")
            extension = self.stages[0].ckpt.test_extension
            if "before" not in cache:  # the earlier stages do not change while this one trains
                cache["before"] = inference.predict(self.stages, info, extension=extension,
                                                    batch_size=cfg.eval_batch_size, limit=cfg.eval_limit,
                                                    num_threads=cfg.num_threads, table=self.table("test"))[-1]
            before = cache["before"]
            rows = np.arange(len(before["pred"]))
            pred = inference.refine(model, self.table("test"), rows, before["pred"], sigma=cfg.sigma,
                                    fallback=before["crop_box"][:, 2:].max(axis=1),
                                    batch_size=cfg.eval_batch_size, num_threads=cfg.num_threads)
            now = {**before, "pred": pred, "pose_loss": float("nan")}
            reports = [scoring.make_report(p, info, extension, t0) for p in (before, now)]
            log.print(f"--- step {step}: test split, stage {cfg.stage - 1} -> stage {cfg.stage}, "
                      f"{reports[1]['num_people']} people, {time.time() - t0:.1f} s")
            for stage, report in zip((cfg.stage - 1, cfg.stage), reports):
                h = report["headline"]
                log.print(f"stage {stage}: mPCP {h['mPCP']:.3f} | mPCKh {h['mPCKh']:.3f} | "
                          f"mSymmetricPCKh {h['mSymmetricPCKh']:.3f} | official {h['official_total']:.3f}")
            log.scalars(step, scoring.summary_scalars(reports[1]))
            log.jsonl("eval_curve.jsonl", {"step": step, **scoring.curve_record(reports[1])})

        return run


def _previous_run_hint(cfg: TrainConfig) -> str:
    return (f"train stage {cfg.stage - 1} first, or pass its run with {option('previous')} RUN "
            f"(alias --from)")


def prepare(cfg: TrainConfig, manifest: shards.Manifest, *, resume: bool) -> StageInputs:
    """Check a stage s >= 2's inputs and resolve them (module docstring). Raises ``StageSetupError``,
    ``links.CascadeError`` or ``statistics.StatsError``, each one line naming the file."""
    try:
        previous = checkpoint.load(cfg.previous)
    except checkpoint.CheckpointError as e:
        raise StageSetupError(f"stage {cfg.stage} is trained on a stage-{cfg.stage - 1} run, and there is none: "
                              f"{e}; {_previous_run_hint(cfg)}") from None
    stages = links.chain(previous)
    if stages[-1].stage != cfg.stage - 1:
        raise StageSetupError(f"{previous.path}: a stage-{stages[-1].stage} checkpoint; stage {cfg.stage} is "
                              f"trained on stage {cfg.stage - 1}; {_previous_run_hint(cfg)}")
    skeleton = previous.meta.get("skeleton")
    if previous.num_joints != int(manifest.num_joints) or (skeleton and manifest.skeleton
                                                          and skeleton != manifest.skeleton):
        raise StageSetupError(f"{previous.path}: trained on {skeleton or '?'} poses of {previous.num_joints} "
                              f"joints, but {Path(cfg.data) / shards.MANIFEST} holds {manifest.skeleton} poses of "
                              f"{manifest.num_joints}; train stage {cfg.stage} on stage {cfg.stage - 1}'s data set")
    expect = statistics.stage_source(stage=cfg.stage, checkpoint=previous.path, step=previous.step, data=cfg.data)
    if resume:
        path = Path(cfg.out) / OWN_STATS
    elif cfg.stats:
        path = Path(cfg.stats)
    else:
        path = links.run_folder(previous) / statistics.default_file(cfg.stage)
    stats = statistics.load(path, expect)
    return StageInputs(cfg.replace(previous=str(Path(previous.path).resolve())), stages, stats)
