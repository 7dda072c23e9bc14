"""The training driver: a custom ``tf.function`` step fed by the DALI pipeline, data-parallel with Horovod,
in four named steps that a second driver can reuse: ``setup`` (checks before any work, the state),
``restore`` (checkpoint or ImageNet weights, the same state on every rank), ``loop`` (the steps, with
logs, checkpoints and evaluations) and ``finish`` (the last checkpoint and evaluation, the summary);
``train()`` runs them in order. The state and the step live in ``train_state``, the run folder's checks
and logs in ``run_folder``.

One process per GPU (``horovodrun -np N deeppose-fast train ...``), or a single process. Every rank reads
its own shard of the data (``shard_id = rank``); gradients are averaged by Horovod's tape (optionally
compressed to fp16); only rank 0 writes logs, summaries, checkpoints and evaluations. Shapes: a batch is
``images (B, S, S, 3)``, ``targets (B, K, 2)`` (crop frame, ``p / S - 0.5``), ``weights (B, K)``.

Exact resume. The data order is a pure function of ``(seed, step)``: the input pipeline is re-created
every ``data_segment_steps`` steps with the seed ``segment_seed(seed, segment, rank)``. A run resumed
at step s re-creates the pipeline of segment ``s // data_segment_steps`` and skips the batches of that
segment already consumed, so it sees exactly the batches an uninterrupted run sees. Weights, optimiser
slots, dropout RNG state and the step counter are all in the checkpoint.

Elastic training (``--elastic`` under ``horovodrun --min-np M --max-np X --host-discovery-script S``):
``loop`` commits the whole state (every variable of ``TrainState.variables``: weights, both optimisers'
slots, batch-norm statistics, dropout RNG, the step, hence the data position and the learning-rate
schedule) in memory every ``commit_every`` steps (``dist.KerasState``). When a rank fails, the survivors
roll back to the last commit, the ring is re-formed, every rank adopts its new rank and the new number of
ranks (``Run.adopt_ranks``: the rates scale with it, the step functions are traced again) and ``loop``
runs again from the committed step. Data after a reset: the batches of a rank are a pure function of
(seed, step, rank, number of ranks) (``data_iterator``): from the committed step on, each rank reads
exactly what a run resumed at that step with that many ranks reads. Samples of the rolled-back steps are
read again, and the shard split changes with the number of ranks, so no "each sample once per epoch"
guarantee holds across a reset. Checkpoints on disk are written as without elastic mode.

Stopping. Ctrl-C (SIGINT) or SIGTERM sets a flag; the flag is summed over ranks with the loss every step,
so all ranks stop after the same step, and rank 0 writes a checkpoint before exiting. A non-finite loss,
or a NaN or infinite variable (weights or optimiser slots: a huge learning rate can ruin the weights
while the loss stays finite), stops training with ``TrainingDiverged`` and writes nothing, so the last
good checkpoint stays the newest. The variables are checked on the device at every ``log_every`` step
and before every checkpoint (one reduction per variable; the step itself is unchanged).

Before any work (``setup``): the data folder (manifest readable, listed shards present, and every crop
of the recipe and the periodic evaluation's crop inside the region ``prepare`` stored, and not upsampled
from it: ``precrop.require_covers``), the run folder (free
and writable) and, on resume, the settings that shape the saved state; each failure is one error naming
the file or folder and the fix. The initial state is broadcast from rank 0 before the first step (the
optimisers are built explicitly, so no slot is created later), so the first step on N ranks is exactly
the step of one process on the union of their batches.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import tensorflow as tf

from deeppose_fast import checkpoint, config, dist, scoring
from deeppose_fast import weights as weights_lib
from deeppose_fast.cascade import stage as cascade_stage
from deeppose_fast.config import TrainConfig
from deeppose_fast.datasets import precrop, shards
from deeppose_fast.pipeline import dali
from deeppose_fast.run_folder import Logger, RunFolderError, check_resume, check_run_folder, on_every_rank
from deeppose_fast.train_state import (TrainState, build_state, configure_tensorflow, non_finite_check,
                                       weights_digest)

# (seed, shard_id, num_shards) -> iterable of (images, targets, weights) batches, endless.
DatasetFactory = Callable[[int, int, int], Iterable]


class TrainingDiverged(RuntimeError):
    """The loss, or a variable (weights, optimiser slots), became NaN or infinite."""


class RankLost(RuntimeError):
    """Another rank of a distributed run died (killed, crashed, raised) during a collective; this rank
    stopped too. ``reporter`` is True on the one rank that should tell the user (``dist.report_rank``)."""

    def __init__(self, lost: dist.PeerLost, step: int, out: str, newest: Path | None):
        self.reporter = lost.reporter
        super().__init__(f"{lost} at step {step}; the job stops; newest checkpoint "
                         f"{newest or '(none written yet)'}; resume with the same launcher and "
                         f"`deeppose-fast train --resume --out {out}`")


@contextlib.contextmanager
def _lost_ranks(current_step: Callable[[], int], out: str, ckpt_dir: Path):
    """Turn the error a collective raises when another rank has died into ``RankLost``, naming the lost
    rank, the step, the newest checkpoint and the resume command."""
    try:
        yield
    except Exception as e:
        if not dist.is_peer_failure(e):
            raise
        found = checkpoint.list_checkpoints(ckpt_dir)
        raise RankLost(dist.peer_lost(), current_step(), out, found[-1] if found else None) from None


def segment_seed(seed: int, segment: int, rank: int = 0) -> int:
    """The input pipeline's seed for one data segment: a pure function of (seed, segment, rank)."""
    h = hashlib.sha256(f"{seed}/{segment}/{rank}".encode()).digest()
    return int.from_bytes(h[:4], "little") % (2**31 - 1)


def data_iterator(factory: DatasetFactory, cfg: TrainConfig, step: int, rank: int, num_ranks: int):
    """The batches of ``rank`` of ``num_ranks`` from ``step`` on, until the end of its data segment: the
    segment's pipeline (seed ``segment_seed(seed, segment, rank)``, shard ``rank`` of ``num_ranks``) with
    the batches of the segment before ``step`` skipped. A pure function of (seed, step, rank, num_ranks):
    what exact resume and the restart after an elastic reset rely on."""
    seg = step // cfg.data_segment_steps
    iterator = iter(factory(segment_seed(cfg.seed, seg, rank), rank, num_ranks))
    for _ in range(step - seg * cfg.data_segment_steps):
        next(iterator)
    return iterator


def dali_dataset_factory(cfg: TrainConfig, cache_mb: int = 0) -> DatasetFactory:
    """The DALI training pipeline over ``cfg.data``: the network's input size, the config's crop recipe; on
    a GPU with ``cache_mb``, DALI's decoder cache, held for the whole run (``dali.DecodeCache``)."""
    holder: list[dali.DecodeCache] = []

    def make(seed: int, shard_id: int, num_shards: int):
        if cache_mb and not holder:
            holder.append(dali.DecodeCache(cache_mb))
        return dali.train_dataset(cfg.data, batch_size=cfg.batch_size, input_size=cfg.model.input_size,
                                  augment=cfg.augment, seed=seed, shard_id=shard_id, num_shards=num_shards,
                                  num_threads=cfg.num_threads, cache_mb=cache_mb)

    return make


class _StopFlag:
    """SIGINT / SIGTERM set a flag that the loop reads between steps (main thread only)."""

    def __init__(self):
        self.raised = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.raised and signum == signal.SIGINT:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, exc_type, *exc):
        for sig, handler in self._previous.items():
            if sig == signal.SIGTERM and exc_type is RankLost:
                continue  # keep ignoring horovodrun's SIGTERM until the report is printed (dist.peer_lost)
            signal.signal(sig, handler)
        return False


@dataclass
class Run:
    """One training run's parts, handed from step to step (``setup`` makes it)."""

    cfg: TrainConfig
    state: TrainState
    dataset_factory: DatasetFactory
    log: Logger
    num_joints: int
    skeleton: str | None
    resumed: checkpoint.Checkpoint | None  # the checkpoint ``restore`` continues from
    evaluate_fn: Callable | None  # (model, step) -> None, on rank 0
    last_ckpt: Path | None = None
    saved_step: int | None = None  # the step of the newest checkpoint (every rank knows it)
    last_loss: float = float("nan")
    t_start: float = 0.0
    bar: object = None  # the progress bar while ``loop`` runs
    commit: Callable | None = None  # elastic: commits the state in memory (``loop`` calls it)
    folder_error: RunFolderError | None = None  # elastic: rank 0's run-folder verdict, shared later
    init_from: checkpoint.Checkpoint | None = None  # a cascade stage: stage s-1's checkpoint, already read

    def __post_init__(self):
        self.ckpt_dir = Path(self.cfg.out) / "checkpoints"
        self.adopt_ranks()

    def adopt_ranks(self) -> None:
        """Take this process's rank and the number of ranks (again after an elastic reset): the
        learning rates and step functions follow the number of ranks, the collectives' names start
        again from zero on every rank, and the rank that is now 0 logs."""
        self.rank, self.nranks, self.root = dist.rank(), dist.size(), dist.is_root()
        self.state.set_num_ranks(self.nranks)
        self._find_non_finite = non_finite_check(self.state.groups)
        self._syncs = 0
        if self.root and not self.log.enabled:
            self.log = Logger(Path(self.cfg.out), True)
        self.log.enabled = self.root

    def diverged(self, what: str, at_step: int) -> TrainingDiverged:
        """The error (and train.log line) for a diverged run: what went non-finite, and the way back."""
        if self.bar is not None:
            self.bar.close()
        last_good = self.last_ckpt or (self.resumed.path if self.resumed is not None else None)
        again = "resume" if last_good else "start again in a new --out"
        msg = (f"training diverged: {what} at step {at_step}; nothing was saved after the last good "
               f"checkpoint ({last_good or 'none written in this run'}). Lower the learning rates "
               f"(conv_lr={self.cfg.conv_lr}, fc_lr={self.cfg.fc_lr}) and {again}.")
        self.log.print(msg)
        return TrainingDiverged(msg)

    def check_variables(self, at_step: int) -> None:
        """Stop (all ranks) if a weight or optimiser slot went NaN or infinite."""
        bad = self._find_non_finite()
        if bad is not None:
            raise self.diverged(f"{bad} holds NaN or infinity", at_step)

    def sync_statistics(self) -> None:
        """Average the batch-norm moving statistics over ranks (each computed its own from its data): a
        collective, at steps every rank reaches, before anything is saved or evaluated."""
        if self.state.bn_stats and self.nranks > 1:
            self._syncs += 1
            dist.average_variables(self.state.bn_stats, prefix=f"bn_stats_{self._syncs}")

    def save(self, step: int) -> None:
        """Check every variable (all ranks, a collective), then write the checkpoint (rank 0)."""
        self.check_variables(step)
        self.saved_step = step
        if not self.root:
            return
        cfg = self.cfg
        seg = step // cfg.data_segment_steps
        meta = {"num_joints": self.num_joints, "skeleton": self.skeleton, "model": cfg.model.to_dict(),
                "config": cfg.to_dict(), "num_ranks": self.nranks,
                "data": {"seed": cfg.seed, "segment_steps": cfg.data_segment_steps, "segment": seg,
                         "segment_seed": segment_seed(cfg.seed, seg, 0),
                         "batches_into_segment": step - seg * cfg.data_segment_steps}}
        self.last_ckpt = checkpoint.save(self.ckpt_dir, step, self.state.groups, meta, keep=cfg.keep_checkpoints)

    def evaluate(self, step: int) -> None:
        if self.evaluate_fn is not None and self.root and self.cfg.eval_every > 0:
            self.evaluate_fn(self.state.model, step)


def setup(cfg: TrainConfig, *, resume: bool = False, dataset_factory: DatasetFactory | None = None,
          num_joints: int | None = None, skeleton: str | None = None,
          evaluate_fn: Callable | None = None) -> Run:
    """Check everything that can be checked before any work, then build the state (see ``train``).

    The read-only checks come first (data and its pre-crop, checkpoint), then the run folder, which is
    created by its check; nothing is written before all passed."""
    configure_tensorflow(cfg)
    dist.init()
    if cfg.elastic and not dist.is_elastic():
        raise ValueError("--elastic needs horovodrun's elastic mode: horovodrun --gloo -np N --min-np M "
                         "--max-np X --host-discovery-script SCRIPT deeppose-fast train --elastic ...")
    out = Path(cfg.out)
    real_data = dataset_factory is None
    cache_note, stage_inputs = None, None
    if real_data:
        manifest = shards.Manifest.read(cfg.data)
        num_joints = int(manifest.num_joints)
        skeleton = manifest.skeleton or skeleton
        if cfg.stage == 1:
            precrop.require_covers(cfg.data, cfg.augment, cfg.model.input_size, manifest=manifest)
            precrop.require_covers(cfg.data, precrop.eval_augment(cfg.test_extension), cfg.model.input_size,
                                   manifest=manifest)
            cache_mb, cache_note = dali.decode_cache_plan(cfg.data, manifest, "train", cfg.decode_cache_gb)
            dataset_factory = dali_dataset_factory(cfg, cache_mb)
        else:  # a cascade stage: joint crops about simulated estimates, its checks (``cascade.stage``)
            stage_inputs = cascade_stage.prepare(cfg, manifest, resume=resume)
            cfg = stage_inputs.cfg  # ``previous`` resolved to one checkpoint
            dataset_factory = stage_inputs.dataset_factory()
    if num_joints is None:
        raise ValueError("num_joints is required with a custom dataset_factory")
    resumed = None
    if resume:
        resumed = checkpoint.load(out / "checkpoints")  # clear error if there is none
        check_resume(resumed, cfg, num_joints)
    folder_error = None
    if cfg.elastic:
        # No collective before the elastic driver: a rank that joins later would wait in it forever.
        # Rank 0 checks alone; ``train_elastic`` shares its verdict once every rank is in the driver.
        if dist.is_root():
            try:
                check_run_folder(out, resume)
            except RunFolderError as e:
                folder_error = e
    else:
        on_every_rank(lambda: check_run_folder(out, resume))

    log = Logger(out, dist.is_root() and folder_error is None)
    if cache_note:
        log.print(cache_note)
    if stage_inputs is not None:
        if not resume and dist.is_root() and folder_error is None:
            log.print(f"stage {cfg.stage} of the cascade, on {cfg.previous}; displacement statistics kept in "
                      f"{stage_inputs.save_stats(out)}")
        c = stage_inputs.coverage
        if "crops" in c:
            finer = (f"; prepare --min-extension {c['min_extension']:g} stores 90 % of the others at 1:1 or finer"
                     if c.get("min_extension") else "")
            log.print(f"stored regions: {100 * c['outside']:.1f} % of an epoch's {c['crops']} crops reach beyond "
                      f"them (at most); {100 * c['upsampled']:.0f} % are upsampled from them (median "
                      f"{c['stored_per_output']:.2f} stored px per output px; {100 * c['source_limited']:.0f} % "
                      f"have fewer pixels in the source image itself){finer}")
        if evaluate_fn is None and cfg.eval_every > 0:
            evaluate_fn = stage_inputs.evaluator(log)
    if real_data and evaluate_fn is None and cfg.eval_every > 0:
        evaluate_fn = default_evaluator(cfg, log)
    state = build_state(cfg, num_joints, dist.size())
    return Run(cfg, state, dataset_factory, log, num_joints, skeleton, resumed, evaluate_fn,
               folder_error=folder_error, init_from=stage_inputs.stages[-1].ckpt if stage_inputs else None)


def restore(run: Run) -> None:
    """Continue from ``run.resumed`` (variables, step; the rates from the configuration) or start from
    the ImageNet weights if configured; then give every rank rank 0's state (weights, slots, step,
    dropout RNG), with a different dropout stream per rank. Rank 0 writes ``config.json``."""
    cfg, state, log, ckpt = run.cfg, run.state, run.log, run.resumed
    if ckpt is not None:
        if run.root:
            for line in checkpoint.clean_leftovers(run.ckpt_dir):
                log.print(f"{run.ckpt_dir}: {line} (left by a killed writer)")
            saved_ranks = int(ckpt.meta.get("num_ranks", run.nranks))
            if saved_ranks != run.nranks:
                log.print(f"warning: {ckpt.path} was trained on {saved_ranks} rank(s), this run has "
                          f"{run.nranks}: the data order changes (each rank reads its own shard with its own "
                          f"seed), and the batch per step is {run.nranks} x {cfg.batch_size} instead of "
                          f"{saved_ranks} x {cfg.batch_size}; continuing")
        for name, variables in state.groups.items():
            checkpoint.assign(ckpt, name, variables)
        state.global_step.assign(ckpt.step)
        state.set_learning_rates(ckpt.step)  # possibly overridden on resume
        run.saved_step = ckpt.step
        log.print(f"resumed from {ckpt.path} at step {ckpt.step}")
    elif cfg.weights:
        loaded = weights_lib.load_imagenet(state.model, cfg.weights)
        log.print(f"initialised {', '.join(loaded)} from {cfg.weights}")
    elif cfg.stage >= 2 and cfg.init_previous:
        previous = run.init_from or checkpoint.load(cfg.previous)  # read by ``setup``, unless data were given
        fresh = cascade_stage.initialise_from_previous(cfg, previous, state.model)
        log.print(f"initialised the network from stage {cfg.stage - 1}'s {previous.path}"
                  + (f" (all but {', '.join(fresh)})" if fresh else ""))

    if not cfg.elastic:  # elastic: the state is synced when the ring forms (``dist.run_elastic``)
        dist.broadcast_variables(state.variables, root_rank=0)
        _decorrelate_dropout(run)
    if run.root:
        (Path(cfg.out) / "config.json").write_text(cfg.to_json())
        log.print(f"training {cfg.preset}: {state.model.count_params():,} parameters, {run.num_joints} joints, "
                  f"{run.nranks} rank(s) x batch {cfg.batch_size}, steps {state.step}..{cfg.max_steps}")


def _decorrelate_dropout(run: Run) -> None:
    """Different dropout masks per rank, reproducibly: offset the RNG state rank 0 gave every rank."""
    if run.rank > 0:
        for v in run.state.model.non_trainable_variables:
            if "seed_generator" in v.path:
                v.assign(v.numpy() + run.rank * 7919)


def loop(run: Run) -> str | None:
    """Train from the state's step to ``max_steps``: log every ``log_every`` steps, checkpoint every
    ``ckpt_every``, evaluate every ``eval_every``, commit (elastic) every ``commit_every``. Returns what
    stopped it early (``"signal"``, ``"time limit"``, ``"another rank"``) or None.

    Raises:
        TrainingDiverged: the loss or a variable became non-finite (nothing saved after the last good
            checkpoint). RankLost: another rank died.
    """
    cfg, state, log = run.cfg, run.state, run.log
    step = state.step
    run.t_start = time.time()
    run.bar = log.progress_bar(cfg, step)
    iterator, iter_segment = None, None
    t_window, n_window = time.time(), 0
    stopped_by = None
    lr_varies = cfg.lr_schedule != "constant" or (cfg.scale_lr and run.nranks > 1 and cfg.warmup_steps > 0)
    # Elastic: a lost rank is Horovod's to handle (``dist.run_elastic``), not an end of the job.
    lost_ranks = contextlib.nullcontext() if cfg.elastic else _lost_ranks(lambda: step, cfg.out, run.ckpt_dir)
    with _StopFlag() as stop, lost_ranks:
        while step < cfg.max_steps:
            seg = step // cfg.data_segment_steps
            if iter_segment != seg:
                iterator, iter_segment = data_iterator(run.dataset_factory, cfg, step, run.rank, run.nranks), seg
            images, targets, weights = next(iterator)
            if lr_varies:
                state.set_learning_rates(step)
            want_stop = stop.raised or (cfg.max_minutes > 0 and time.time() - run.t_start > 60 * cfg.max_minutes)
            fn = state.step_fn(step >= cfg.fix_conv_steps)
            stats = fn(images, targets, weights, tf.constant(1.0 if want_stop else 0.0)).numpy()
            loss, stop_votes = float(stats[0]) / run.nranks, float(stats[1])
            if not math.isfinite(loss):
                raise run.diverged(f"the loss is {loss}", step + 1)
            step = state.step
            run.last_loss = loss
            n_window += 1
            run.bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                run.check_variables(step)
                _log_step(run, step, loss, n_window / max(time.time() - t_window, 1e-9))
                t_window, n_window = time.time(), 0
            if stop_votes > 0:
                stopped_by = "signal" if stop.raised else ("time limit" if cfg.max_minutes > 0 else "another rank")
                break
            if step % cfg.ckpt_every == 0 or (cfg.eval_every > 0 and step % cfg.eval_every == 0):
                run.sync_statistics()
            if step % cfg.ckpt_every == 0:
                run.save(step)
            if cfg.eval_every > 0 and step % cfg.eval_every == 0:
                run.evaluate(step)
                t_window, n_window = time.time(), 0  # evaluation time is not training speed
            if run.commit is not None and step % cfg.commit_every == 0:
                run.commit()
    run.bar.close()
    return stopped_by


def _log_step(run: Run, step: int, loss: float, steps_per_s: float) -> None:
    """The progress bar's figures, the summaries, ``train_curve.jsonl`` and (without a bar) a log line."""
    state = run.state
    ips = steps_per_s * run.cfg.batch_size * run.nranks
    run.bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{steps_per_s:.2f}", img_s=f"{ips:.0f}")
    run.log.scalars(step, {"train/loss": loss, "train/images_per_s": ips, "train/steps_per_s": steps_per_s,
                           "train/lr_conv": float(state.opt_conv.learning_rate.numpy()),
                           "train/lr_fc": float(state.opt_fc.learning_rate.numpy())})
    run.log.jsonl("train_curve.jsonl", {"step": step, "loss": loss, "images_per_s": ips,
                                        "elapsed_s": round(time.time() - run.t_start, 2)})
    if run.bar.disable:  # no progress bar: a plain log line instead
        run.log.print(f"step {step} loss {loss:.5f} {steps_per_s:.2f} steps/s {ips:.0f} img/s")


def finish(run: Run, stopped_by: str | None) -> dict:
    """Checkpoint the last step (unless just saved), evaluate it (unless stopped early or just
    evaluated), print each rank's weight digest and how the run ended. Returns the summary dict."""
    cfg, state = run.cfg, run.state
    step = state.step
    if run.saved_step != step:
        # Not again after ``loop``'s save at this step: an average of equal values over 3 ranks can
        # differ from them in the last bit, and the weights would then not be the checkpoint's.
        run.sync_statistics()
        run.save(step)
    elif run.last_ckpt is None and run.resumed is not None and run.root:  # resumed a finished run
        run.last_ckpt = run.resumed.path
    if stopped_by is None and cfg.eval_every > 0 and step % cfg.eval_every != 0:
        run.evaluate(step)
    digest = weights_digest(state.model)
    # Every rank reports its digest, so a launcher can check they agree.
    print(f"rank {run.rank}/{run.nranks} step {step} weights sha256 {digest}", file=sys.stderr, flush=True)
    if stopped_by:
        run.log.print(f"stopped cleanly at step {step} ({stopped_by}); checkpoint {run.last_ckpt}; resume with "
                      f"`deeppose-fast train --resume --out {cfg.out}`")
    elif run.root:
        run.log.print(f"finished at step {step}; checkpoint {run.last_ckpt}")
    return {"step": step, "loss": run.last_loss, "checkpoint": str(run.last_ckpt) if run.last_ckpt else None,
            "digest": digest, "stopped_by": stopped_by, "model": state.model,
            "elapsed_s": time.time() - run.t_start}


def train(cfg: TrainConfig, *, resume: bool = False, dataset_factory: DatasetFactory | None = None,
          num_joints: int | None = None, skeleton: str | None = None,
          evaluate_fn: Callable | None = None) -> dict:
    """Train with ``cfg``; returns a summary dict (``step``, ``loss``, ``checkpoint``, ``digest`` ...).

    Args:
        resume: continue from the newest checkpoint in ``cfg.out`` (a clear error if there is none).
        dataset_factory: replaces the DALI pipeline (tests); then ``num_joints`` and ``skeleton`` must be
            given, and ``evaluate_fn(model, step)`` (if any) replaces evaluation on the test split.
    Raises:
        TrainingDiverged: the loss became NaN or infinite (the newest checkpoint is the last good one).
    """
    run = setup(cfg, resume=resume, dataset_factory=dataset_factory, num_joints=num_joints,
                skeleton=skeleton, evaluate_fn=evaluate_fn)
    if cfg.elastic:
        return train_elastic(run)
    restore(run)
    return finish(run, loop(run))


def train_elastic(run: Run) -> dict:
    """``loop`` and ``finish`` under Horovod's elastic driver (see the module docstring): after each
    (re-)forming of the ring every rank adopts its rank and the number of ranks and continues from the
    committed step. Rank 0 logs each reset, and at the end the commits' cost as a share of the time.

    A rank that joins runs ``setup`` and ``restore`` without a collective, then receives the state from
    rank 0 in the driver. Rank 0's run-folder check (``setup``) is shared on its first entry, so a bad
    ``--out`` stops every rank (a rank that exits alone would only be replaced)."""
    if run.folder_error is None:
        restore(run)
    state = dist.keras_state(run.state.variables)
    t0, entries = time.perf_counter(), []

    def body(elastic_state):
        first_on_root = not entries and dist.is_root()
        error = dist.broadcast_object(run.folder_error if first_on_root else None, name="run_folder_check")
        if error is not None:
            raise error
        run.adopt_ranks()
        _decorrelate_dropout(run)
        run.commit = elastic_state.commit
        if entries:
            run.log.print(f"elastic: ring re-formed with {run.nranks} rank(s); continuing from step "
                          f"{run.state.step} (the last commit), "
                          f"{time.perf_counter() - entries[-1]:.1f} s after the previous start")
        entries.append(time.perf_counter())
        result = finish(run, loop(run))
        wall = time.perf_counter() - t0
        n = elastic_state.commits
        run.log.print(f"elastic: {n} commit(s) every {run.cfg.commit_every} steps, "
                      f"{1000 * elastic_state.commit_s / max(n, 1):.1f} ms each, "
                      f"{100 * elastic_state.commit_s / wall:.2f}% of the training time; "
                      f"{len(entries) - 1} reset(s)")
        return result

    return dist.run_elastic(state, body)


def train_command(preset: str | None, resume: bool, overrides: dict) -> dict:
    """What ``deeppose-fast train`` does: the preset (default ``synthetic-cpu``) with ``overrides`` (None
    values ignored), or with ``resume`` and no preset the run's own settings from its newest checkpoint
    with the overrides on top; then ``train``."""
    if resume and preset is None:
        out = overrides.get("out") or config.PRESETS["synthetic-cpu"]["out"]
        saved = checkpoint.load(checkpoint.resolve(f"{out}/checkpoints"))
        cfg = TrainConfig.from_dict(saved.meta["config"]).replace(**overrides)
    else:
        cfg = config.preset(preset or "synthetic-cpu", **overrides)
    return train(cfg, resume=resume)


def default_evaluator(cfg: TrainConfig, log: Logger) -> Callable:
    """Evaluation on the test split every ``eval_every`` steps, printed and written as summaries."""

    def run(model, step):
        t0 = time.time()
        report = scoring.score_model(model, cfg.data, extension=cfg.test_extension,
                                     batch_size=cfg.eval_batch_size, limit=cfg.eval_limit,
                                     num_threads=cfg.num_threads)
        log.print(f"--- step {step}: test split, extension {cfg.test_extension}, "
                  f"{report['num_people']} people, {time.time() - t0:.1f} s")
        log.print(scoring.format_report(report))
        log.scalars(step, scoring.summary_scalars(report))
        log.jsonl("eval_curve.jsonl", {"step": step, **scoring.curve_record(report)})

    return run
