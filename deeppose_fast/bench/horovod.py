"""Stage 5, data-parallel scaling under ``horovodrun``: images/s per rank and weak-scaling efficiency.

For each N in ``ranks`` the runner starts ``horovodrun -np N -H localhost:N --gloo python -m
deeppose_fast.bench.worker horovod JSON``: every rank runs stage 2's step (gradients averaged over ranks
by Horovod's tape) with the same per-rank batch (weak scaling), fed synthetic tensors (``input:
synthetic``, the network and the allreduce alone) or its own shard of the DALI pipeline (``input:
dali``). Ranks share the machine's cores: every rank, at every N, gets ``cpus // max(ranks)`` TF threads
(so on a machine with fewer cores than ranks x threads, the ranks also compete for cores). Efficiency at N = median
per-rank images/s at N / images/s at the smallest N measured (normally 1), so 100 % is perfect scaling.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from deeppose_fast import dist, train
from deeppose_fast.bench import core
from deeppose_fast.bench.train_step import build_step, config_for, synthetic_batch, timed_steps

INPUTS = ("synthetic", "dali")


def horovodrun_exe() -> str:
    """The ``horovodrun`` beside this interpreter (a venv's bin), else the one on PATH."""
    exe = shutil.which("horovodrun", path=str(Path(sys.executable).parent)) or shutil.which("horovodrun")
    if exe is None:
        raise RuntimeError("horovodrun not found: install Horovod (see the README's install section) or "
                           "leave the 'horovod' stage out (--stages)")
    return exe


def worker(p: dict) -> dict | None:
    """One rank's part; returns the gathered result on rank 0 and None elsewhere."""
    t0 = time.perf_counter()
    cfg = config_for(p)
    step, state = build_step(cfg, p["num_joints"])  # configures TF threads first, then Horovod
    model = state.model
    size, rank = dist.size(), dist.rank()
    if p.get("input", "synthetic") == "dali":
        it = iter(train.dali_dataset_factory(cfg)(p.get("seed", 0), rank, size))
        next_batch = lambda: next(it)  # noqa: E731
    else:
        batch = synthetic_batch(cfg.batch_size, cfg.model.input_size, p["num_joints"], seed=rank)
        next_batch = lambda: batch  # noqa: E731
    setup_s = time.perf_counter() - t0
    res = timed_steps(step, next_batch, batch_size=cfg.batch_size, warmup=p["warmup"],
                      repeats=p["repeats"], batches=p["batches"], seconds=p.get("seconds", 0.0))
    allreduce_s = _allreduce_seconds(model, p["repeats"])
    # every rank's rates, gathered by a sum of one-hot rows (a collective: all ranks call it)
    mine = np.zeros((size, len(res["values"]) + 2))
    mine[rank] = res["values"] + [core.peak_rss_mb(), setup_s]
    table = dist.allreduce(mine, average=False, name="bench_rates")
    if rank != 0:
        return None
    grad_mb = 4 * sum(int(np.prod(v.shape)) for v in model.trainable_variables) / 2**20
    per_rank = [statistics.median(row[:-2]) for row in table]
    return {"ranks": size, "values": table[:, :-2].ravel().tolist(), "per_rank_median": per_rank,
            "median": statistics.median(per_rank), "total": float(sum(per_rank)),
            "spread": core.spread(table[:, :-2].ravel()), "unit": "images/s per rank",
            "wait_fraction_median": res["wait_fraction_median"], "peak_rss_mib": float(table[:, -2].max()),
            "setup_s": float(table[:, -1].max()), "tf_intra_op_threads": res["tf_intra_op_threads"],
            "gradient_mb": grad_mb, "allreduce_s": allreduce_s,
            # the share of a step that one gradient-sized allreduce alone takes (rank 0's view)
            "allreduce_fraction": allreduce_s * statistics.median(res["values"]) / cfg.batch_size}


def _allreduce_seconds(model, repeats: int) -> float:
    """Median seconds of one allreduce of a float32 buffer as large as all trainable weights (what the
    step averages), after one untimed call; 0 alone (no collective runs)."""
    if dist.size() == 1:
        return 0.0
    n = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    buf = tf.zeros((n,), tf.float32)
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        dist.allreduce(buf, name=f"bench_allreduce_{i}").numpy()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def run(data, *, ranks=(1, 2), preset: str, batch_size: int, input_size: int, num_joints: int,
        input: str = "synthetic", warmup: int = 2, repeats: int = 3, batches: int = 5, seconds: float = 0.0,
        threads: int = 1, timeout: float | None = None) -> dict:
    """Launch one horovodrun per N in ``ranks``. Returns ``{"params", "rows"}`` with ``efficiency``."""
    if input not in INPUTS:
        raise ValueError(f"unknown horovod input {input!r}; expected one of {INPUTS}")
    ranks = sorted(set(int(n) for n in ranks))
    if not ranks or ranks[0] < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    exe = horovodrun_exe()
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}  # horovodrun starts `python` from PATH
    params = {"data": str(data) if data else "", "preset": preset, "batch_size": batch_size,
              "input_size": input_size, "num_joints": num_joints, "input": input, "warmup": warmup,
              "repeats": repeats, "batches": batches, "seconds": seconds, "threads": threads}
    # The same TF threads per rank at every N (the cores of the largest run, shared out), so that the
    # efficiency measures communication and contention, not a rank losing threads to the next one.
    params["tf_threads"] = max(1, core.usable_cpus() // max(ranks))
    rows = []
    for n in ranks:
        p = params
        cmd = [exe, "-np", str(n), "-H", f"localhost:{n}", "--gloo"] + core.worker_command("horovod", p)
        rows.append({"name": f"{n} rank{'s' if n > 1 else ''}", **core.run_command(
            cmd, f"horovod with {n} ranks", timeout=timeout, env=env)})
    base = rows[0]["median"]
    for r in rows:
        r["efficiency"] = r["median"] / base if base else float("nan")
    return {"params": {**params, "ranks": ranks}, "rows": rows}


def measure(s, data, num_joints: int) -> dict:
    """The stage for the runner's resolved ``Settings`` ``s``: the loader threads shared out over the
    largest number of ranks."""
    return run(data, ranks=s.ranks, preset=s.preset, batch_size=s.batch_size, input_size=s.input_size,
               num_joints=num_joints, input=s.horovod_input, batches=s.train_batches,
               threads=max(1, s.threads // max(s.ranks)), warmup=s.warmup, repeats=s.repeats, seconds=s.seconds,
               timeout=s.timeout)


def markdown(stage: dict) -> str:
    p = stage["params"]
    lines = [f"`horovodrun -np N -H localhost:N --gloo`, weak scaling: batch {p['batch_size']} per rank, "
             f"preset `{p['preset']}` network at {p['input_size']} px, {p['input']} input, "
             f"{p['tf_threads']} TF thread(s) per rank; "
             f"{core.repeats_note(p, 'steps')} per rank.", ""]
    lines += core.table(["ranks", "images/s per rank (median)", "spread", "images/s total", "efficiency",
                         "allreduce of the gradients, s (share of a step)", "peak RSS MiB (max rank)"],
                        [[str(r["ranks"]), *core.rate_cells(r), f"{r['total']:.1f}", f"{100 * r['efficiency']:.0f} %",
                          f"{r['allreduce_s']:.3f} ({100 * r['allreduce_fraction']:.0f} %)" if r["ranks"] > 1 else "-",
                          f"{r['peak_rss_mib']:.0f}"] for r in stage["rows"]])
    grad = stage["rows"][0].get("gradient_mb")
    if grad:
        lines += ["", f"Gradients: {grad:.1f} MB of float32 per step."]
    return "\n".join(lines) + "\n"
