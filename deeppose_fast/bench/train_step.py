"""Stage 2, the training step alone on synthetic tensors: images/s of the real step function.

The state and the step are the trainer's own (``train_state.build_state``: the network of a ``config``
preset, both optimisers; ``TrainState.step_fn``: forward, backward, gradient averaging over ranks, both
optimisers), fed the same device-resident random batch every time, so no input work is measured.
Variants: ``fp32``; on a GPU also ``bf16`` (mixed precision), ``xla`` (``jit_compile``) and ``bf16+xla``.
Each variant runs in its own process (the mixed-precision policy is global), and the variants alternate
over ``rounds``. ``timed_steps`` (``core.measure_rate`` on steps) is shared with stages 3 and 5.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import tensorflow as tf

from deeppose_fast import config, dist
from deeppose_fast.bench import core
from deeppose_fast.config import TrainConfig
from deeppose_fast.train_state import TrainState, build_state, configure_tensorflow

VARIANTS = ("fp32", "bf16", "xla", "bf16+xla")


def default_variants() -> list[str]:
    """fp32 alone on CPU (bf16 and XLA are GPU features here); all four where a GPU is present."""
    return list(VARIANTS) if core.gpu_names() else ["fp32"]


def config_for(p: dict) -> TrainConfig:
    """The ``TrainConfig`` of worker params: preset network, with batch, input size, precision, XLA and
    TF threads overridden."""
    variant = p.get("variant", "fp32")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return config.preset(p["preset"], batch_size=p["batch_size"], input_size=p["input_size"],
                         data=p.get("data") or None, num_threads=p.get("threads"),
                         mixed_precision="bf16" if "bf16" in variant else "off", xla="xla" in variant,
                         tf_threads=p.get("tf_threads") or None, progress=False)


def build_step(cfg: TrainConfig, num_joints: int) -> tuple[Callable, TrainState]:
    """The training step of ``train`` for ``cfg`` and its state: ``step(images, targets, weights) ->
    stats`` (a tensor; ``.numpy()`` waits for the step to finish). Configures TF, then initialises
    Horovod under horovodrun, as ``train.setup`` does."""
    configure_tensorflow(cfg)
    dist.init()
    state = build_state(cfg, num_joints, dist.size())
    fn, no_stop = state.step_fn(True), tf.constant(0.0)
    return (lambda images, targets, weights: fn(images, targets, weights, no_stop)), state


def synthetic_batch(batch_size: int, input_size: int, num_joints: int, seed: int = 0):
    """A random (images, targets, weights) batch as TF tensors on the default device."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, input_size, input_size, 3), dtype=np.float32)
    targets = rng.uniform(-0.5, 0.5, (batch_size, num_joints, 2)).astype(np.float32)
    return tf.constant(images), tf.constant(targets), tf.ones((batch_size, num_joints), tf.float32)


def timed_steps(step: Callable, next_batch: Callable, *, batch_size: int, warmup: int, repeats: int,
                batches: int, seconds: float = 0.0) -> dict:
    """``core.measure_rate`` on training steps: ``warmup`` untimed steps, then ``repeats`` timed runs of
    at least ``batches`` steps and ``seconds``. Returns images/s per repeat (``values``), the fraction of
    wall time blocked in ``next_batch()`` (``wait_fraction``) and TF's intra-op threads."""

    def one(batch) -> int:
        step(*batch).numpy()  # .numpy() waits for the step: no work is left in flight
        return batch_size

    timing = core.measure_rate(one, fetch=next_batch, warmup=warmup, repeats=repeats, min_calls=batches,
                               min_seconds=seconds, unit="images/s")
    # 0 = TensorFlow's default (all cores)
    return {**timing.to_dict(), "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def worker(p: dict) -> dict:
    """Measure one variant (``p["name"]``) on synthetic tensors in this process."""
    t0 = time.perf_counter()
    cfg = config_for({**p, "variant": p["name"]})
    step, _ = build_step(cfg, p["num_joints"])
    batch = synthetic_batch(cfg.batch_size, cfg.model.input_size, p["num_joints"])
    setup_s = time.perf_counter() - t0
    result = timed_steps(step, lambda: batch, batch_size=cfg.batch_size, warmup=p["warmup"],
                         repeats=p["repeats"], batches=p["batches"], seconds=p.get("seconds", 0.0))
    return {**result, "setup_s": setup_s, "peak_rss_mib": core.peak_rss_mb()}


def run(*, preset: str, batch_size: int, input_size: int, num_joints: int = 16, variants=None,
        warmup: int = 2, repeats: int = 3, batches: int = 5, seconds: float = 0.0, rounds: int = 1,
        tf_threads: int = 0, timeout: float | None = None) -> dict:
    """Measure the variants (default ``default_variants()``). Returns ``{"params", "rows"}``."""
    params = {"preset": preset, "batch_size": batch_size, "input_size": input_size, "num_joints": num_joints,
              "warmup": warmup, "repeats": repeats, "batches": batches, "seconds": seconds,
              "tf_threads": tf_threads}
    return core.compare("train-step", "variants", list(variants or default_variants()), VARIANTS, params,
                        rounds, timeout=timeout)


def measure(s, data, num_joints: int) -> dict:
    """The stage for the runner's resolved ``Settings`` ``s``."""
    return run(preset=s.preset, batch_size=s.batch_size, input_size=s.input_size, num_joints=num_joints,
               variants=s.variants, batches=s.train_batches, rounds=s.rounds, warmup=s.warmup,
               repeats=s.repeats, seconds=s.seconds, timeout=s.timeout)


def markdown(stage: dict) -> str:
    p = stage["params"]
    lines = [f"Network of preset `{p['preset']}` at {p['input_size']} px, batch {p['batch_size']}, "
             f"synthetic tensors; {core.repeats_note(p, 'steps')}.", ""]
    lines += core.table(["variant", "images/s (median)", "spread", "CPU s / 1000 images", "set-up s",
                         "peak RSS MiB"],
                        [[r["name"], *core.rate_cells(r), f"{r['cpu_s_per_1000']:.1f}", f"{r['setup_s']:.1f}",
                          f"{r['peak_rss_mib']:.0f}"] for r in stage["rows"]])
    return "\n".join(lines) + "\n"
