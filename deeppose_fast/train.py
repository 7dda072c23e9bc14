"""The training loop: a custom ``tf.function`` step fed by the DALI pipeline, data-parallel with Horovod.

One process per GPU (``horovodrun -np N deeppose-fast train ...``), or a single process without
horovodrun. Every rank reads its own shard of the data (``shard_id = rank``); gradients are averaged by
``hvd.DistributedGradientTape`` (optionally compressed to fp16); only rank 0 writes logs, summaries,
checkpoints and evaluations.

Shapes: B batch per rank, S input size, K joints. A batch is ``images (B, S, S, 3)``,
``targets (B, K, 2)`` (crop frame, ``p / S - 0.5``), ``weights (B, K)``.

Exact resume. The data order is a pure function of ``(seed, step)``: the input pipeline is re-created
every ``data_segment_steps`` steps with the seed ``segment_seed(seed, segment, rank)``. A run resumed
at step s re-creates the pipeline of segment ``s // data_segment_steps`` and skips the batches of that
segment already consumed, so it sees exactly the batches an uninterrupted run sees. Weights, optimiser
slots, dropout RNG state and the step counter are all in the checkpoint.

Stopping. Ctrl-C (SIGINT) or SIGTERM sets a flag; the flag is summed over ranks with the loss every step,
so all ranks stop after the same step, and rank 0 writes a checkpoint before exiting. A non-finite loss,
or a NaN or infinite variable (weights or optimiser slots: a huge learning rate can ruin the weights
while the loss stays finite), stops training with ``TrainingDiverged`` and writes nothing, so the last
good checkpoint stays the newest. The variables are checked on the device at every ``log_every`` step
and before every checkpoint (one reduction per variable; the step itself is unchanged).

Before any work. The data folder is validated (manifest readable, listed shards present), the run folder
is checked (it must be writable, and a run folder belongs to one run: without ``resume`` a folder that
already holds a run is refused), and on resume the settings that shape the saved state (optimiser and
network) must be the checkpoint's. Each failure is one error naming the file or folder and the fix.

Initial state is broadcast from rank 0 *before* the first step: the optimisers are built explicitly
(no lazily created slots), so broadcasting then is safe, and the first step on N ranks is exactly the
step of one process on the union of their batches.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from deeppose_fast import checkpoint, dist
from deeppose_fast.config import TrainConfig

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


class RunFolderError(ValueError):
    """The run folder (``--out``) cannot take this run: it holds another run, or cannot be written."""


# What a run writes into its folder; any of them means the folder already holds a run.
RUN_FILES = ("checkpoints", "config.json", "train.log", "train_curve.jsonl", "eval_curve.jsonl",
             "tensorboard")
# Settings that shape the saved state (optimiser slots, network variables): a resume must keep them.
RESUME_FIXED = ("optimizer", "input_size", "width", "fc_units", "norm", "pool5")


def segment_seed(seed: int, segment: int, rank: int = 0) -> int:
    """The input pipeline's seed for one data segment: a pure function of (seed, segment, rank)."""
    h = hashlib.sha256(f"{seed}/{segment}/{rank}".encode()).digest()
    return int.from_bytes(h[:4], "little") % (2**31 - 1)


def learning_rate(base: float, step: int, cfg: TrainConfig, num_ranks: int) -> float:
    """The rate at ``step``: ``base``, multiplied by the number of ranks when ``scale_lr`` is set and
    reached linearly over ``warmup_steps`` (Goyal et al.), times the cosine decay if asked."""
    lr = base
    if cfg.scale_lr and num_ranks > 1:
        target = base * num_ranks
        if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
            lr = base + (target - base) * step / cfg.warmup_steps
        else:
            lr = target
    if cfg.lr_schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.max_steps) / cfg.max_steps))
    return lr


def make_optimizer(cfg: TrainConfig, lr: float, name: str):
    import keras

    if cfg.optimizer == "adagrad":
        return keras.optimizers.Adagrad(lr, initial_accumulator_value=cfg.initial_accumulator, name=name)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr, name=name)
    return keras.optimizers.SGD(lr, momentum=0.9, name=name)


def dali_dataset_factory(cfg: TrainConfig) -> DatasetFactory:
    """The DALI training pipeline over ``cfg.data`` with the config's augmentation."""

    def make(seed: int, shard_id: int, num_shards: int):
        from deeppose_fast.pipeline import dali

        return dali.train_dataset(cfg.data, batch_size=cfg.batch_size, input_size=cfg.input_size,
                                  ext_range=(cfg.ext_min, cfg.ext_max), shift=cfg.shift, flip=cfg.flip,
                                  rotation=cfg.rotation, scale_jitter=cfg.scale_jitter, seed=seed,
                                  shard_id=shard_id, num_shards=num_shards, num_threads=cfg.num_threads)

    return make


def weights_digest(model) -> str:
    """SHA-256 of the model's weights (to compare ranks)."""
    h = hashlib.sha256()
    for v in model.weights:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


def configure_tensorflow(cfg: TrainConfig) -> None:
    """Threads, mixed precision; call before any TensorFlow op runs."""
    import keras
    import tensorflow as tf

    if cfg.tf_threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cfg.tf_threads)))
        except RuntimeError:  # the runtime is already initialised (a second run in one process)
            pass
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg.mixed_precision == "bf16" else "float32")


def _read_manifest(cfg: TrainConfig) -> dict:
    """The data folder's manifest, validated (readable, every listed shard present); ``ShardError``
    naming the file otherwise."""
    from deeppose_fast.datasets import shards

    return shards.read_manifest(cfg.data)


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse a run folder before any work: one that holds another run (unless resuming it), or that
    cannot be written (read-only, not a folder, unwritable sub-folder or log). Creates ``out``.

    A run folder belongs to one run: a second run into it would overwrite ``config.json``, mix its logs
    and curves with the first's, and its checkpoints would compete with the older run's.

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


def _option(name: str, value) -> str:
    """The command-line option that sets ``name`` to ``value``."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def check_resume(ckpt: checkpoint.Checkpoint, cfg: TrainConfig, num_joints: int) -> None:
    """Refuse to resume ``ckpt`` with settings that change the shape of its state, naming what changed.

    Raises:
        checkpoint.CheckpointError: e.g. "the run was trained with optimizer=adam, this configuration says
            optimizer=adagrad; resume with --optimizer adam or start a new --out".
    """
    if ckpt.num_joints != num_joints:
        raise checkpoint.CheckpointError(f"{ckpt.path}: trained for {ckpt.num_joints} joints, the data "
                                         f"has {num_joints}; resume with the run's data or start a new --out")
    saved = {**ckpt.meta.get("config", {}), **ckpt.model_settings}
    for name in RESUME_FIXED:
        mine = getattr(cfg, name)
        if name in saved and str(saved[name]) != str(mine):
            raise checkpoint.CheckpointError(
                f"{ckpt.path}: the run was trained with {name}={saved[name]}, this configuration says "
                f"{name}={mine}; resume with {_option(name, saved[name])} or start a new --out")


def _on_every_rank(check: Callable[[], None]) -> None:
    """Run ``check`` on rank 0 (the only rank that writes the run folder) and raise its error, if
    any, on every rank, so that all stop together."""
    error = None
    if dist.is_root():
        try:
            check()
        except RunFolderError as e:
            error = e
    error = dist.broadcast_object(error, name="run_folder_check")
    if error is not None:
        raise error


def _non_finite_check(groups: dict[str, list]) -> Callable[[], str | None]:
    """A function naming the first variable of ``groups`` that holds NaN or infinity on any rank (None
    when all are finite). One fused reduction per variable on the device, summed over ranks (a
    collective: every rank calls it at the same steps)."""
    import tensorflow as tf

    named = [(f"{group} variable {getattr(v, 'path', v.name)!r}", v)
             for group, variables in groups.items() for v in variables
             if tf.as_dtype(v.dtype).is_floating]
    names = [n for n, _ in named]
    tensors = dist.backing([v for _, v in named])

    @tf.function
    def count_bad():
        bad = tf.stack([tf.cast(tf.reduce_any(~tf.math.is_finite(t)), tf.float32) for t in tensors])
        return dist.allreduce(bad, average=False, name="non_finite_check")

    def first_bad() -> str | None:
        bad = count_bad().numpy()
        return names[int(np.argmax(bad > 0))] if bad.any() else None

    return first_bad


class _StopFlag:
    """SIGINT / SIGTERM set a flag that the loop reads between steps (main thread only)."""

    def __init__(self):
        self.raised = False
        self._previous = {}

    def __enter__(self):
        import threading

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


class _Logger:
    """Rank 0's console, ``train.log``, JSON-lines curve files and TensorBoard summaries."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.out = out
        self.writer = None
        if enabled:
            import tensorflow as tf

            out.mkdir(parents=True, exist_ok=True)
            self.writer = tf.summary.create_file_writer(str(out / "tensorboard"))

    def print(self, msg: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

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
        import tensorflow as tf

        from tensorflow.core.framework import summary_pb2

        # tf.summary.scalar needs the tensorboard package; the raw write with the scalars plugin's
        # metadata produces the same event records without it.
        meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()
        with self.writer.as_default(step=step):
            for k, v in values.items():
                if v is not None and np.isfinite(v):
                    tf.summary.write(k, tf.constant(float(v), tf.float32), metadata=meta)
        self.writer.flush()


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
    configure_tensorflow(cfg)
    dist.init()
    import keras
    import tensorflow as tf

    from deeppose_fast import model as model_lib

    root = dist.is_root()
    nranks, rank = dist.size(), dist.rank()
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"

    # Checks before any work: the read-only ones first (data, checkpoint), then the run folder, which
    # is created by its check; nothing is written before all passed.
    real_data = dataset_factory is None
    if real_data:
        manifest = _read_manifest(cfg)
        num_joints = int(manifest["num_joints"])
        skeleton = manifest.get("skeleton", skeleton)
        dataset_factory = dali_dataset_factory(cfg)
    if num_joints is None:
        raise ValueError("num_joints is required with a custom dataset_factory")
    ckpt = None
    if resume:
        ckpt = checkpoint.load(ckpt_dir)  # clear error if there is none
        check_resume(ckpt, cfg, num_joints)
    _on_every_rank(lambda: check_run_folder(out, resume))

    log = _Logger(out, root)
    if real_data and evaluate_fn is None and cfg.eval_every > 0:
        evaluate_fn = _default_evaluator(cfg, skeleton, log)
    if ckpt is not None and root:
        for line in checkpoint.clean_leftovers(ckpt_dir):
            log.print(f"{ckpt_dir}: {line} (left by a killed writer)")
        saved_ranks = int(ckpt.meta.get("num_ranks", nranks))
        if saved_ranks != nranks:
            log.print(f"warning: {ckpt.path} was trained on {saved_ranks} rank(s), this run has {nranks}: "
                      f"the data order changes (each rank reads its own shard with its own seed), and the "
                      f"batch per step is {nranks} x {cfg.batch_size} instead of {saved_ranks} x "
                      f"{cfg.batch_size}; continuing")

    keras.utils.set_random_seed(cfg.seed)
    model = model_lib.build_regressor(num_joints, cfg.input_size, cfg.width, cfg.fc_units, cfg.dropout,
                                      init=cfg.init, norm=cfg.norm, pool5=cfg.pool5)
    conv_vars, fc_vars = model_lib.split_variables(model)
    opt_conv = make_optimizer(cfg, learning_rate(cfg.conv_lr, 0, cfg, nranks), "opt_conv")
    opt_fc = make_optimizer(cfg, learning_rate(cfg.fc_lr, 0, cfg, nranks), "opt_fc")
    opt_conv.build(conv_vars)
    opt_fc.build(fc_vars)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")

    groups = {"model": model.variables, "opt_conv": opt_conv.variables, "opt_fc": opt_fc.variables}
    if ckpt is not None:
        for name, variables in groups.items():
            checkpoint.assign(ckpt, name, variables)
        global_step.assign(ckpt.step)
        # The rates come from the configuration (possibly overridden on resume), not the checkpoint.
        opt_conv.learning_rate = learning_rate(cfg.conv_lr, ckpt.step, cfg, nranks)
        opt_fc.learning_rate = learning_rate(cfg.fc_lr, ckpt.step, cfg, nranks)
        log.print(f"resumed from {ckpt.path} at step {ckpt.step}")
    elif cfg.weights:
        from deeppose_fast import weights as weights_lib

        loaded = weights_lib.load_imagenet(model, cfg.weights)
        log.print(f"initialised {', '.join(loaded)} from {cfg.weights}")

    # Every rank starts from rank 0's state (weights, slots, step, dropout RNG).
    dist.broadcast_variables(list(model.variables) + list(opt_conv.variables) + list(opt_fc.variables)
                             + [global_step], root_rank=0)
    if rank > 0:  # different dropout masks per rank, reproducibly
        for v in model.non_trainable_variables:
            if "seed_generator" in v.path:
                v.assign(v.numpy() + rank * 7919)

    # Batch-norm moving statistics are computed per rank from its own data: they are averaged over
    # ranks (a collective, at steps every rank reaches) before anything is saved or evaluated.
    bn_stats = [v for v in model.non_trainable_variables if "moving_" in v.path]
    sync_counter = [0]

    def sync_statistics():
        if bn_stats and nranks > 1:
            sync_counter[0] += 1
            dist.average_variables(bn_stats, prefix=f"bn_stats_{sync_counter[0]}")

    step_fns = {}

    def get_step_fn(train_conv: bool):
        if train_conv not in step_fns:
            step_fns[train_conv] = make_step(model, opt_conv, opt_fc, conv_vars, fc_vars, train_conv,
                                              global_step, cfg)
        return step_fns[train_conv]

    find_non_finite = _non_finite_check(groups)

    def diverged(what: str, at_step: int) -> TrainingDiverged:
        """The error (and train.log line) for a diverged run: what went non-finite, and the way back."""
        bar.close()
        last_good = last_ckpt or (ckpt.path if ckpt is not None else None)
        again = "resume" if last_good else "start again in a new --out"
        msg = (f"training diverged: {what} at step {at_step}; nothing was saved after the last good "
               f"checkpoint ({last_good or 'none written in this run'}). Lower the learning rates "
               f"(conv_lr={cfg.conv_lr}, fc_lr={cfg.fc_lr}) and {again}.")
        log.print(msg)
        return TrainingDiverged(msg)

    def check_variables(at_step: int) -> None:
        """Stop (all ranks) if a weight or optimiser slot went NaN or infinite."""
        bad = find_non_finite()
        if bad is not None:
            raise diverged(f"{bad} holds NaN or infinity", at_step)

    meta_base = {"num_joints": num_joints, "skeleton": skeleton,
                 "model": dict(input_size=cfg.input_size, width=cfg.width, fc_units=cfg.fc_units,
                               dropout=cfg.dropout, norm=cfg.norm, pool5=cfg.pool5),
                 "config": cfg.to_dict(), "num_ranks": nranks}

    def save(step: int) -> Path | None:
        """Check every variable (all ranks, a collective), then write the checkpoint (rank 0)."""
        check_variables(step)
        if not root:
            return None
        seg = step // cfg.data_segment_steps
        meta = {**meta_base, "data": {"seed": cfg.seed, "segment_steps": cfg.data_segment_steps,
                                      "segment": seg, "segment_seed": segment_seed(cfg.seed, seg, 0),
                                      "batches_into_segment": step - seg * cfg.data_segment_steps}}
        path = checkpoint.save(ckpt_dir, step, groups, meta, keep=cfg.keep_checkpoints)
        return path

    step = int(global_step.numpy())
    if root:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.to_json())
        log.print(f"training {cfg.preset}: {model.count_params():,} parameters, {num_joints} joints, "
                  f"{nranks} rank(s) x batch {cfg.batch_size}, steps {step}..{cfg.max_steps}")

    from tqdm import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (root and cfg.progress), unit="step",
               dynamic_ncols=True, file=sys.stderr)
    iterator, iter_segment = None, None
    last_loss, last_ckpt = float("nan"), None
    saved_step = ckpt.step if ckpt is not None else None  # on every rank (save() is a collective)
    t_start = time.time()
    t_window, n_window = time.time(), 0
    stopped_by = None
    lr_varies = cfg.lr_schedule != "constant" or (cfg.scale_lr and nranks > 1 and cfg.warmup_steps > 0)
    with _StopFlag() as stop, _lost_ranks(lambda: step, cfg.out, ckpt_dir):
        while step < cfg.max_steps:
            seg = step // cfg.data_segment_steps
            if iter_segment != seg:
                ds = dataset_factory(segment_seed(cfg.seed, seg, rank), rank, nranks)
                iterator, iter_segment = iter(ds), seg
                for _ in range(step - seg * cfg.data_segment_steps):  # resume inside a segment
                    next(iterator)
            images, targets, weights = next(iterator)
            if lr_varies:
                for opt, base in ((opt_conv, cfg.conv_lr), (opt_fc, cfg.fc_lr)):
                    opt.learning_rate = learning_rate(base, step, cfg, nranks)
            want_stop = stop.raised or (cfg.max_minutes > 0 and time.time() - t_start > 60 * cfg.max_minutes)
            fn = get_step_fn(step >= cfg.fix_conv_steps)
            stats = fn(images, targets, weights, tf.constant(1.0 if want_stop else 0.0)).numpy()
            loss, stop_votes = float(stats[0]) / nranks, float(stats[1])
            if not math.isfinite(loss):
                raise diverged(f"the loss is {loss}", step + 1)
            step = int(global_step.numpy())
            last_loss = loss
            n_window += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                check_variables(step)
                dt = time.time() - t_window
                sps = n_window / dt if dt > 0 else float("nan")
                ips = sps * cfg.batch_size * nranks
                bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{sps:.2f}", img_s=f"{ips:.0f}")
                log.scalars(step, {"train/loss": loss, "train/images_per_s": ips, "train/steps_per_s": sps,
                                   "train/lr_conv": float(opt_conv.learning_rate.numpy()),
                                   "train/lr_fc": float(opt_fc.learning_rate.numpy())})
                log.jsonl("train_curve.jsonl", {"step": step, "loss": loss, "images_per_s": ips,
                                                "elapsed_s": round(time.time() - t_start, 2)})
                if bar.disable:  # no progress bar: a plain log line instead
                    log.print(f"step {step} loss {loss:.5f} {sps:.2f} steps/s {ips:.0f} img/s")
                t_window, n_window = time.time(), 0
            if stop_votes > 0:
                stopped_by = "signal" if stop.raised else ("time limit" if cfg.max_minutes > 0 else "another rank")
                break
            if step % cfg.ckpt_every == 0 or (cfg.eval_every > 0 and step % cfg.eval_every == 0):
                sync_statistics()
            if step % cfg.ckpt_every == 0:
                last_ckpt, saved_step = save(step), step
            if evaluate_fn is not None and root and cfg.eval_every > 0 and step % cfg.eval_every == 0:
                evaluate_fn(model, step)
                t_window, n_window = time.time(), 0  # evaluation time is not training speed
    bar.close()
    sync_statistics()
    if saved_step != step:
        last_ckpt = save(step)
    elif last_ckpt is None and ckpt is not None and root:  # resumed a run that had already finished
        last_ckpt = ckpt.path
    if stopped_by is None and evaluate_fn is not None and root and cfg.eval_every > 0 \
            and step % cfg.eval_every != 0:
        evaluate_fn(model, step)
    digest = weights_digest(model)
    # Every rank reports its digest, so a launcher can check they agree.
    print(f"rank {rank}/{nranks} step {step} weights sha256 {digest}", file=sys.stderr, flush=True)
    if stopped_by:
        log.print(f"stopped cleanly at step {step} ({stopped_by}); checkpoint {last_ckpt}; resume with "
                  f"`deeppose-fast train --resume --out {cfg.out}`")
    elif root:
        log.print(f"finished at step {step}; checkpoint {last_ckpt}")
    return {"step": step, "loss": last_loss, "checkpoint": str(last_ckpt) if last_ckpt else None,
            "digest": digest, "stopped_by": stopped_by, "model": model,
            "elapsed_s": time.time() - t_start}


def make_step(model, opt_conv, opt_fc, conv_vars, fc_vars, train_conv, global_step, cfg):
    """One training step as a tf.function: forward, backward, average over ranks, apply.

    Returns ``[sum over ranks of the loss, sum over ranks of the stop votes]``.
    """
    import tensorflow as tf

    from deeppose_fast.model import pose_loss

    conv_src, fc_src = dist.backing(conv_vars), dist.backing(fc_vars)
    sources = conv_src + fc_src if train_conv else fc_src

    def forward(images, targets, weights):
        return pose_loss(model(images, training=True), targets, weights, cfg.loss)

    if cfg.xla:
        # XLA compiles forward and backward; Horovod's collectives stay outside the cluster.
        forward = tf.function(forward, jit_compile=True)

    @tf.function
    def step(images, targets, weights, stop_vote):
        images = tf.cast(images, tf.float32)
        with tf.GradientTape() as tape:
            loss = forward(images, targets, weights)
        grads = dist.gradient_tape(tape, cfg.fp16_allreduce).gradient(loss, sources)
        if train_conv:
            n = len(conv_src)
            opt_conv.apply_gradients(zip(grads[:n], conv_vars))
            opt_fc.apply_gradients(zip(grads[n:], fc_vars))
        else:
            opt_fc.apply_gradients(zip(grads, fc_vars))
        global_step.assign_add(1)
        return dist.allreduce(tf.stack([tf.cast(loss, tf.float32), stop_vote]), average=False,
                              name="loss_and_stop")

    return step


def _default_evaluator(cfg: TrainConfig, skeleton: str | None, log: _Logger) -> Callable:
    """Evaluation on the test split every ``eval_every`` steps, printed and written as summaries."""
    from deeppose_fast import scoring

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
