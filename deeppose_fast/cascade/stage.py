"""Training a cascade stage s >= 2 with the stage-1 loop (``train.setup`` calls ``prepare`` when
``cfg.stage >= 2``): what differs is only the data and the evaluation.

- ``prepare`` checks, before any work, the stage's inputs: the checkpoint of stage s-1 (``cfg.previous``,
  a run folder or a checkpoint, resolved to one checkpoint, written back into the configuration so that the
  stage's checkpoints name it), its chain down to stage 1, that it was trained on this data set's skeleton,
  and the displacement statistics fitted for exactly that checkpoint and data set (``statistics.load``
  with ``statistics.stage_source``), and that the regions ``prepare`` stored hold the stage's crops
  (``require_coverage``: at most ``COVERAGE_LIMIT`` of them reach beyond, else the ``--ext-max`` that
  stores enough is named). On resume, the statistics come from the stage's own run folder
  (``OWN_STATS``, written when the run started) and the previous stage is the one recorded.
- ``StageInputs.dataset_factory``: the joint-crop stream (``joint_crops.stage_train_batches``) per data
  segment, as the loop's ``DatasetFactory`` wants it: exact resume and Horovod's per-rank parts as in
  stage 1.
- ``StageInputs.evaluator``: every ``eval_every`` steps, the cascade up to this stage on the test split
  (the earlier stages' estimates computed once), stage s-1's and stage s's tables.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeppose_fast import checkpoint, codec, scoring
from deeppose_fast import skeleton as skeleton_lib
from deeppose_fast.cascade import inference, links, statistics
from deeppose_fast.config import TrainConfig, option
from deeppose_fast.datasets import precrop, shards
from deeppose_fast.pipeline import joint_crops

OWN_STATS = "cascade-stats.json"  # the statistics a stage's run trains on, in its run folder


class StageSetupError(ValueError):
    """A cascade stage cannot start training (the message names the file and the fix)."""


@dataclass
class StageInputs:
    """What a stage's training needs besides the stage-1 loop: the configuration with ``previous``
    resolved, the earlier stages (stage 1 first; their checkpoints hold the networks' weights only, not the
    optimiser slots), the displacement law and (built on first use) the split's records."""

    cfg: TrainConfig
    stages: list[links.Stage]
    stats: statistics.DisplacementStats
    coverage: dict = field(default_factory=dict)  # ``stored_coverage``'s figures
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
                table=self.table("train"), num_threads=cfg.num_threads, joint_weights=cfg.joint_weights,
                joint_input=cfg.model.joint_input)

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
            now = inference.next_stage(model, self.table("test"), before, sigma=cfg.sigma,
                                       batch_size=cfg.eval_batch_size, num_threads=cfg.num_threads)
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


COVERAGE_LIMIT = 0.05  # the share of a stage's training crops that may reach beyond the stored regions


def stored_coverage(table: joint_crops.RecordTable, rule: precrop.PrecropRule, stats: statistics.DisplacementStats,
                    sigma: float, input_size: int, seed: int = 0) -> dict:
    """How well the regions ``prepare`` stored serve a stage's crops, on one epoch of simulated training
    crops (``joint_crops.sample_training_draws``, unflipped).

    Returns ``outside``: the share of crops whose square reaches beyond the region the pre-crop ``rule``
    stores around its person, where that region does not end at the image's left or top border (the
    image's width and height are not recorded, so a region ending at the right or bottom border counts as
    not covering: an upper bound); ``upsampled``: the share of crops with fewer stored pixels than
    ``input_size`` output pixels along a side, and ``stored_per_output``: the median ratio (for information:
    a stage crop is smaller than the person crop the resolution was stored for); ``source_limited``: the
    share of crops that even the source image holds at fewer pixels than that (no ``prepare`` option helps
    them); ``min_extension``: the ``prepare --min-extension`` that stores 90 % of the others that are
    upsampled now at 1:1 or finer (the stored scale is inversely proportional to the rule's smallest
    extension), None when none of them is."""
    skeleton = skeleton_lib.get(table.info.skeleton)
    gt, offsets = table.joints(), table.offsets()
    rows, joints = joint_crops.training_items(gt, skeleton)
    draws = joint_crops.sample_training_draws(np.random.default_rng(seed), gt, rows, joints, stats, skeleton,
                                              sigma=sigma, flip=False)
    boxes = np.array([codec.joint_box(p[np.isfinite(p).all(axis=1)]) for p in gt])  # (N, 4) cx, cy, w, h
    half = np.stack(rule.half_extents(boxes[:, 2], boxes[:, 3]), axis=1)  # (N, 2)
    centre_abs = boxes[:, :2] + offsets
    lo_abs = np.floor(centre_abs - half)
    lo = np.where(lo_abs > 0, lo_abs - offsets, -np.inf)[rows]  # at the image's border: nothing beyond
    hi = (np.ceil(centre_abs + half) - offsets)[rows]
    side = draws[:, 2:3].astype(np.float64)
    crop_lo, crop_hi = draws[:, :2] - 0.5 * side, draws[:, :2] + 0.5 * side
    outside = ((crop_lo < lo - 1e-3) | (crop_hi > hi + 1e-3)).any(axis=1)
    stored_scale = table.meta[rows][:, shards.META_SCALE].min(axis=1)  # stored px per source px (<= 1)
    ratio = side[:, 0] * stored_scale / input_size
    source_limited = side[:, 0] / input_size < 1
    gains = (ratio < 1) & ~source_limited  # upsampled from what was stored, not from the source
    min_extension = None
    if rule.enabled and rule.resolution > 0 and gains.any():
        low = float(np.quantile(ratio[gains], 0.1))
        min_extension = math.floor(100 * rule.ext_min * low) / 100  # rounded down: at least that fine
    return {"outside": float(outside.mean()), "upsampled": float((ratio < 1).mean()),
            "stored_per_output": float(np.median(ratio)), "source_limited": float(source_limited.mean()),
            "crops": int(len(rows)), "min_extension": min_extension}


def require_coverage(inputs: StageInputs, manifest: shards.Manifest) -> dict:
    """Refuse a stage whose crops reach beyond the stored regions too often (``COVERAGE_LIMIT``), naming the
    ``prepare --ext-max`` that stores enough; return the coverage figures otherwise."""
    cfg = inputs.cfg
    rule = precrop.PrecropRule.from_manifest(manifest.precrop)
    if not rule.enabled:
        return {"outside": 0.0}
    table = inputs.table("train")
    found = stored_coverage(table, rule, inputs.stats, cfg.sigma, cfg.model.input_size, cfg.seed)
    if found["outside"] <= COVERAGE_LIMIT:
        return found
    ext = rule.ext_max
    while ext < 16 and stored_coverage(table, dataclasses.replace(rule, ext_max=ext), inputs.stats, cfg.sigma,
                                       cfg.model.input_size, cfg.seed)["outside"] > COVERAGE_LIMIT:
        ext = round(ext + 0.25, 2)
    command = shards.rebuild_command(cfg.data, manifest.replace(precrop={**rule.to_dict(), "ext_max": ext}))
    raise StageSetupError(
        f"{Path(cfg.data) / shards.MANIFEST}: {100 * found['outside']:.0f} % of stage {cfg.stage}'s training crops "
        f"(sigma {cfg.sigma:g}) reach beyond the regions prepare stored around each person (ext-max "
        f"{rule.ext_max:g}; at most {100 * COVERAGE_LIMIT:.0f} % may); prepare the data set again with "
        f"--ext-max {ext:g}: `{command} --replace`, or lower --sigma")


def check_initial_network(cfg: TrainConfig, previous: checkpoint.Checkpoint) -> None:
    """Refuse to start a stage from stage s-1's weights (``init_previous``) when its network differs in
    more than being joint-conditioned (``ModelSpec.joint_input``)."""
    if previous.model_spec.replace(joint_input=cfg.model.joint_input) != cfg.model:
        raise StageSetupError(f"{previous.path}: stage {cfg.stage - 1}'s network ({previous.model_spec}) is not "
                              f"this stage's ({cfg.model}); train this stage from scratch with --no-init-previous")


def initialise_from_previous(cfg: TrainConfig, previous: checkpoint.Checkpoint, model) -> list[str]:
    """Stage s-1's weights into this stage's ``model`` (``init_previous``): every variable when the networks
    are the same; between a plain and a joint-conditioned network, every layer of the same name and shapes
    (conv1-fc7: not fc8, whose width differs, nor the per-joint biases, which start at 0). Returns the
    names of the layers left as initialised."""
    check_initial_network(cfg, previous)
    if previous.model_spec == cfg.model:
        checkpoint.assign(previous, "model", model.variables)
        return []
    saved = dict(previous.arrays["model"])  # the checkpoint names each value by its variable's path
    fresh = []
    for layer in model.layers:
        values = [saved.get(w.path) for w in layer.weights]
        if any(v is None or v.shape != tuple(w.shape) for v, w in zip(values, layer.weights)):
            fresh.append(layer.name)
            continue
        for v, w in zip(values, layer.weights):
            w.assign(v.astype(np.dtype(w.dtype)))
    return fresh


def _weights_only(ckpt: checkpoint.Checkpoint) -> checkpoint.Checkpoint:
    """The checkpoint with its network's variables only (the run keeps it: the optimiser slots are
    twice the weights again and never used)."""
    return dataclasses.replace(ckpt, arrays={"model": ckpt.arrays["model"]})


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
    first = stages[0].ckpt  # the evaluation's person crops are stage 1's
    precrop.require_covers(cfg.data, precrop.eval_augment(first.test_extension), first.model_spec.input_size,
                           manifest=manifest)
    if cfg.init_previous and not resume:
        check_initial_network(cfg, previous)
    stages = [dataclasses.replace(s, ckpt=_weights_only(s.ckpt)) for s in stages]
    inputs = StageInputs(cfg.replace(previous=str(Path(previous.path).resolve())), stages, stats)
    inputs.coverage = require_coverage(inputs, manifest)
    return inputs
