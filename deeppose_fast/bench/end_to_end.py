"""Stage 3, end-to-end training with a real input pipeline: images/s and the fraction of step time
spent waiting for input.

The step and network are stage 2's (``train_step.build_step``, fp32); batches come from
``train.dali_dataset_factory`` (the ``tf.data`` DALI dataset the trainer uses: ``dali``) or from the
OpenCV reference loader (``reference``, NumPy batches), both cropping by the preset's ``AugmentSpec``. Waiting for input = time blocked in
``next(iterator)`` / total step time, per timed repeat. Each source runs in its own process.
"""
from __future__ import annotations

import statistics
import time

from deeppose_fast import train
from deeppose_fast.bench import core
from deeppose_fast.bench.train_step import build_step, config_for, timed_steps
from deeppose_fast.pipeline import reference

SOURCES = ("dali", "reference")


def batches_from(source: str, cfg, seed: int = 0):
    """An endless iterator of ``(images, targets, weights)`` from ``source`` with ``cfg``'s crop recipe."""
    if source == "dali":
        return iter(train.dali_dataset_factory(cfg)(seed, 0, 1))
    if source == "reference":
        it = reference.train_batches(cfg.data, batch_size=cfg.batch_size, input_size=cfg.model.input_size,
                                     augment=cfg.augment, seed=seed, num_threads=cfg.num_threads)
        return ((b["images"], b["targets"], b["weights"]) for b in it)
    raise ValueError(f"unknown input source {source!r}; expected one of {SOURCES}")


def worker(p: dict) -> dict:
    """Train on source ``p["name"]`` in this process for the timed repeats."""
    t0 = time.perf_counter()
    cfg = config_for(p)
    step, _ = build_step(cfg, p["num_joints"])
    it = batches_from(p["name"], cfg)
    setup_s = time.perf_counter() - t0
    result = timed_steps(step, lambda: next(it), batch_size=cfg.batch_size, warmup=p["warmup"],
                         repeats=p["repeats"], batches=p["batches"], seconds=p.get("seconds", 0.0))
    return {**result, "setup_s": setup_s, "peak_rss_mib": core.peak_rss_mb()}


def run(data, *, preset: str, batch_size: int, input_size: int, num_joints: int, sources=("dali",),
        warmup: int = 3, repeats: int = 3, batches: int = 5, seconds: float = 0.0, rounds: int = 1,
        threads: int = 2, tf_threads: int = 0, timeout: float | None = None) -> dict:
    """Measure each input source. Returns ``{"params", "rows"}``."""
    params = {"data": str(data), "preset": preset, "batch_size": batch_size, "input_size": input_size,
              "num_joints": num_joints, "warmup": warmup, "repeats": repeats, "batches": batches,
              "seconds": seconds, "threads": threads, "tf_threads": tf_threads}
    stage = core.compare("end-to-end", "sources", list(sources), SOURCES, params, rounds, timeout=timeout)
    for row in stage["rows"]:  # over every repeat of every round
        row["wait_fraction_median"] = statistics.median(row["wait_fraction"])
    return stage


def measure(s, data, num_joints: int) -> dict:
    """The stage for the runner's resolved ``Settings`` ``s``."""
    return run(data, preset=s.preset, batch_size=s.batch_size, input_size=s.input_size, num_joints=num_joints,
               sources=s.sources, batches=s.train_batches, rounds=s.rounds, threads=s.threads,
               warmup=s.warmup, repeats=s.repeats, seconds=s.seconds, timeout=s.timeout)


def markdown(stage: dict) -> str:
    p = stage["params"]
    lines = [f"Preset `{p['preset']}` network at {p['input_size']} px, batch {p['batch_size']}, fp32, "
             f"{p['threads']} loader threads; {core.repeats_note(p, 'steps')}.", ""]
    lines += core.table(["input", "images/s (median)", "spread", "waiting for input", "CPU s / 1000 images",
                         "peak RSS MiB"],
                        [[r["name"], *core.rate_cells(r), f"{100 * r['wait_fraction_median']:.1f} %",
                          f"{r['cpu_s_per_1000']:.1f}", f"{r['peak_rss_mib']:.0f}"] for r in stage["rows"]])
    return "\n".join(lines) + "\n"
