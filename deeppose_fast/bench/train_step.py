"""Stage 2, the training step alone on synthetic tensors: images/s of the real step function.

The step is ``train.make_step`` (forward, backward, gradient averaging over ranks, both optimisers)
on the network of a ``config`` preset, fed the same device-resident random batch every time, so no input
work is measured. Variants: ``fp32``; on a GPU also ``bf16`` (mixed precision), ``xla`` (``jit_compile``)
and ``bf16+xla``. Each variant runs in its own process (the mixed-precision policy is global), and the
variants alternate over ``rounds``. The timed loop (``timed_steps``) is shared with stages 3 and 5.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np

from deeppose_fast.bench import core

VARIANTS = ("fp32", "bf16", "xla", "bf16+xla")


def default_variants() -> list[str]:
    """fp32 alone on CPU (bf16 and XLA are GPU features here); all four where a GPU is present."""
    return list(VARIANTS) if core.gpu_names() else ["fp32"]


def config_for(p: dict):
    """The ``TrainConfig`` of worker params: preset network, with batch, input size, precision, XLA and
    TF threads overridden."""
    from deeppose_fast import config

    variant = p.get("variant", "fp32")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return config.preset(p["preset"], batch_size=p["batch_size"], input_size=p["input_size"],
                         data=p.get("data") or None, num_threads=p.get("threads"),
                         mixed_precision="bf16" if "bf16" in variant else "off", xla="xla" in variant,
                         tf_threads=p.get("tf_threads") or None, progress=False)


def build_step(cfg, num_joints: int) -> tuple[Callable, object]:
    """The training step of ``train`` for ``cfg``'s network and the model: ``step(images, targets,
    weights) -> stats`` (a tensor; ``.numpy()`` waits for the step to finish). Configures TF, then
    initialises Horovod under horovodrun, as ``train.train`` does."""
    import tensorflow as tf

    from deeppose_fast import dist, train
    from deeppose_fast import model as model_lib

    train.configure_tensorflow(cfg)
    dist.init()
    model = model_lib.build_regressor(num_joints, cfg.input_size, cfg.width, cfg.fc_units, cfg.dropout,
                                      init=cfg.init, norm=cfg.norm, pool5=cfg.pool5)
    conv_vars, fc_vars = model_lib.split_variables(model)
    opt_conv = train.make_optimizer(cfg, cfg.conv_lr, "opt_conv")
    opt_fc = train.make_optimizer(cfg, cfg.fc_lr, "opt_fc")
    opt_conv.build(conv_vars)
    opt_fc.build(fc_vars)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    step = train.make_step(model, opt_conv, opt_fc, conv_vars, fc_vars, True, global_step, cfg)
    no_stop = tf.constant(0.0)
    return (lambda images, targets, weights: step(images, targets, weights, no_stop)), model


def synthetic_batch(batch_size: int, input_size: int, num_joints: int, seed: int = 0):
    """A random (images, targets, weights) batch as TF tensors on the default device."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, input_size, input_size, 3), dtype=np.float32)
    targets = rng.uniform(-0.5, 0.5, (batch_size, num_joints, 2)).astype(np.float32)
    return tf.constant(images), tf.constant(targets), tf.ones((batch_size, num_joints), tf.float32)


def timed_steps(step: Callable, next_batch: Callable, *, batch_size: int, warmup: int, repeats: int,
                batches: int, seconds: float = 0.0) -> dict:
    """Run ``warmup`` untimed steps, then ``repeats`` timed runs of at least ``batches`` steps and
    ``seconds``. Returns images/s per repeat (``values``) and, per repeat, the fraction of wall time spent
    blocked in ``next_batch()`` (``wait_fraction``: waiting for input / total step time)."""
    for _ in range(warmup):
        step(*next_batch()).numpy()
    rates, waits, cpu = [], [], []
    for _ in range(repeats):
        n, wait, start, cpu0 = 0, 0.0, time.perf_counter(), time.process_time()
        while True:
            t0 = time.perf_counter()
            batch = next_batch()
            wait += time.perf_counter() - t0
            step(*batch).numpy()  # .numpy() waits for the step: no work is left in flight
            n += 1
            total = time.perf_counter() - start
            if n >= batches and total >= seconds:
                break
        rates.append(n * batch_size / total)
        waits.append(wait / total)
        cpu.append((time.process_time() - cpu0) / (n * batch_size))
    import tensorflow as tf

    return {"median": statistics.median(rates), "spread": core.spread(rates), "values": rates,
            "unit": "images/s", "wait_fraction": waits, "wait_fraction_median": statistics.median(waits),
            "cpu_s_per_1000": 1000 * statistics.median(cpu),
            # 0 = TensorFlow's default (all cores)
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}


def worker(p: dict) -> dict:
    """Measure one variant (``p["name"]``) on synthetic tensors in this process."""
    t0 = time.perf_counter()
    cfg = config_for({**p, "variant": p["name"]})
    step, _ = build_step(cfg, p["num_joints"])
    batch = synthetic_batch(cfg.batch_size, cfg.input_size, p["num_joints"])
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
    return core.compare("train_step", "variants", list(variants or default_variants()), VARIANTS, params,
                        rounds, timeout=timeout)


def markdown(stage: dict) -> str:
    p = stage["params"]
    lines = [f"Network of preset `{p['preset']}` at {p['input_size']} px, batch {p['batch_size']}, "
             f"synthetic tensors; {core.repeats_note(p, 'steps')}.", ""]
    lines += core.table(["variant", "images/s (median)", "spread", "CPU s / 1000 images", "set-up s",
                         "peak RSS MiB"],
                        [[r["name"], *core.rate_cells(r), f"{r['cpu_s_per_1000']:.1f}", f"{r['setup_s']:.1f}",
                          f"{r['peak_rss_mib']:.0f}"] for r in stage["rows"]])
    return "\n".join(lines) + "\n"
