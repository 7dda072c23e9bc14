"""Stage 4, the metric kernels: ``metrics.evaluate`` with the Numba kernels against the vectorised NumPy
reference at several numbers of people, and the first call in a fresh process (compile time apart).

Steady state: the same synthetic float32 data (predictions = ground truth + Gaussian noise, 8 % of joints
unannotated, 3 % of predictions missing) goes through both backends, which must agree. After one untimed
warm-up call each (compile or cache load), ``repeats`` calls per backend alternate Numba and NumPy so that
each pair sees the same load; the speed-up is the median of the per-pair ratios.

First call: the time of the first ``evaluate`` in a new Python process with a private, initially empty
``NUMBA_CACHE_DIR``: the first process compiles (``cold``), the next ones load the cache it wrote
(``cached``; ``cached + scipy``: SciPy imported beforehand). Compile time = cold - cached first call.
Interpreter start-up and imports are reported apart.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from deeppose_fast import skeleton
from deeppose_fast.bench import core
from deeppose_fast.metrics import evaluate, kernels

CASES = (("lsp", "dtf"), ("mpii", "official"))
DEFAULT_SIZES = (2_000, 100_000, 1_000_000)
BACKENDS = ("numba", "numpy")
FIRST_CALL_RUNS = ("cold", "cached", "cached + scipy")


def make_data(n: int, dataset: str, seed: int = 0, dtype=np.float32) -> dict:
    """Synthetic evaluation inputs: pred, gt (N, K, 2), head_box (N, 4), as ``PoseData`` holds them."""
    sk = skeleton.get(dataset)
    rng = np.random.default_rng(seed)
    k = sk.num_joints
    gt = rng.uniform(0, 480, (n, k, 2))
    # the head top 20-60 px above the neck, so that the normalisers are realistic
    gt[:, sk.head_top, 0] = gt[:, sk.neck, 0]
    gt[:, sk.head_top, 1] = gt[:, sk.neck, 1] - rng.uniform(20, 60, n)
    pred = gt + rng.normal(0, 12, (n, k, 2))
    missing = rng.random((n, k)) < 0.08
    missing[:, [sk.head_top, sk.neck]] = False  # keep every person's normaliser usable
    gt[missing] = np.nan
    pred[rng.random((n, k)) < 0.03] = np.nan
    top = gt[:, sk.head_top]
    head_box = np.concatenate([top - 20, top + 20], axis=1)
    pred, gt, head_box = (np.ascontiguousarray(a, dtype=dtype) for a in (pred, gt, head_box))
    return {"pred": pred, "gt": gt, "head_box": head_box}


def steady_state(sizes, repeats: int, cases=CASES) -> list[dict]:
    """Seconds per ``evaluate`` call for each size, case and backend, after one warm-up call each.

    The two backends' calls alternate (Numba, NumPy, Numba, ...) so that each pair sees the same load on
    a shared machine; ``speedup_median`` is the median of the per-pair ratios NumPy / Numba and
    ``speedup_best`` the ratio of the fastest calls."""
    rows = []
    for n in sizes:
        for dataset, protocol in cases:
            data = make_data(n, dataset)

            def call(backend):
                return evaluate(data["pred"], data["gt"], dataset, protocol, head_box=data["head_box"],
                                backend=backend)

            warm = {b: call(b) for b in BACKENDS}  # compile / cache load, first touch of the data
            if abs(warm["numba"].total - warm["numpy"].total) > 1e-12:
                raise RuntimeError(f"backends disagree at n={n} {dataset}/{protocol}: "
                                   f"{warm['numba'].total} vs {warm['numpy'].total}")
            times = {b: [] for b in BACKENDS}
            for _ in range(repeats):
                for b in BACKENDS:
                    t0 = time.perf_counter()
                    call(b)
                    times[b].append(time.perf_counter() - t0)
            row = {"people": n, "dataset": dataset, "protocol": protocol}
            for b in BACKENDS:
                row[b] = {"median_s": statistics.median(times[b]), "min_s": min(times[b]),
                          "times_s": times[b]}
            row["speedup_median"] = statistics.median(p / q for p, q in zip(times["numpy"], times["numba"]))
            row["speedup_best"] = min(times["numpy"]) / min(times["numba"])
            row["people_per_s_numba"] = n / row["numba"]["median_s"]
            rows.append(row)
            del data
    return rows


_CHILD = r"""
import json, sys, time
if sys.argv[1] == "scipy":  # as in an evaluation run that already read .mat files with scipy
    import scipy.linalg
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
from deeppose_fast.metrics import evaluate, kernels
t2 = time.perf_counter()
from deeppose_fast.bench.metrics import make_data, CASES
out = {"import_numba_s": t1 - t0, "import_metrics_s": t2 - t1, "first_call_s": {}, "second_call_s": {}}
for dataset, protocol in CASES:
    d = make_data(2000, dataset)
    for key in ("first_call_s", "second_call_s"):
        t = time.perf_counter()
        evaluate(d["pred"], d["gt"], dataset, protocol, head_box=d["head_box"])
        out[key][dataset + "/" + protocol] = time.perf_counter() - t
if sys.argv[2] == "parallel":
    kernels.PARALLEL_MIN_PEOPLE = 0  # 2,000 people ran single-threaded: now the parallel kernel's first call
    t = time.perf_counter()
    evaluate(d["pred"], d["gt"], dataset, protocol, head_box=d["head_box"])
    out["first_parallel_call_s"] = time.perf_counter() - t
stats = [kernels._fused_serial.stats, kernels._fused_parallel.stats]
out["cache_hits"] = sum(sum(s.cache_hits.values()) for s in stats)
out["cache_misses"] = sum(sum(s.cache_misses.values()) for s in stats)
print(json.dumps(out))
"""


def first_call(runs=FIRST_CALL_RUNS, parallel: bool = True) -> dict:
    """First-call times in fresh processes sharing a private, initially empty cache, for each of
    ``runs`` (in order; ``cold`` must come first): ``cold`` compiles and writes the cache, ``cached``
    loads it, ``cached + scipy`` loads it with SciPy imported before. With ``parallel``, also the first
    call of the parallel kernel. Adds ``compile_s``: cold - cached first call, per case."""
    bad = [r for r in runs if r not in FIRST_CALL_RUNS]
    if bad or not runs or runs[0] != "cold":
        raise ValueError(f"first-call runs must start with 'cold' and be among {FIRST_CALL_RUNS}, got {runs}")
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = {}
        # "cached + scipy": Numba's first dispatch imports scipy.linalg (its BLAS check) when SciPy is
        # installed; a process that already imported SciPy does not pay that again
        for label in runs:
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _CHILD, "scipy" if "scipy" in label else "-",
                                   "parallel" if parallel else "-"], env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(f"first-call child failed:\n{proc.stderr[-3000:]}")
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            out[label]["process_wall_s"] = wall
    if "cached" in out:
        out["compile_s"] = {case: out["cold"]["first_call_s"][case] - out["cached"]["first_call_s"][case]
                            for case in out["cold"]["first_call_s"]}
    return out


def environment() -> dict:
    """Numba's threads and threading layer, and the load average (beside ``core.system_info``)."""
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        kernels.joint_errors(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)))
        layer = numba.threading_layer()
    return {"numba_threads": numba.get_num_threads(), "threading_layer": layer,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def run(sizes=DEFAULT_SIZES, repeats: int = 5, *, include_first_call: bool = True,
        first_call_runs=FIRST_CALL_RUNS, parallel_first_call: bool = True) -> dict:
    """Run the benchmark; return ``{"date", "sizes", "repeats", "first_call", "steady_state",
    "environment", "system"}`` (seconds)."""
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": list(sizes),
              "repeats": repeats}
    if include_first_call:
        result["first_call"] = first_call(first_call_runs, parallel_first_call)
    result["steady_state"] = steady_state(sizes, repeats)
    result["environment"] = environment()
    result["system"] = core.system_info()
    return result


def worker(p: dict) -> dict:
    """One run of the stage in this (worker) process."""
    return run(p["sizes"], p["repeats"], include_first_call=p.get("first_call", True),
               first_call_runs=tuple(p.get("first_call_runs", FIRST_CALL_RUNS)),
               parallel_first_call=p.get("parallel_first_call", True))


def measure(s, data, num_joints: int) -> dict:
    """The stage for the runner's resolved ``Settings`` ``s``, in a worker process as every stage (its
    steady-state timings undisturbed by the runner); the record's own system block describes the machine."""
    p = {"sizes": list(s.metrics_sizes), "repeats": max(3, s.repeats), "first_call": True,
         "first_call_runs": ["cold", "cached"] if s.quick else list(FIRST_CALL_RUNS),
         "parallel_first_call": not s.quick}
    result = core.run_worker("metrics", p, timeout=s.timeout)
    result.pop("system", None)
    return result


def markdown(result: dict) -> str:
    """The stage's tables: steady state, then first calls."""
    lines = [f"`evaluate()` end to end, float32 input, {result['repeats']} alternating calls per backend "
             f"after a warm-up; Numba threads {result['environment']['numba_threads']} "
             f"({result['environment']['threading_layer']}).", "",
             "| people | dataset/protocol | Numba median s | NumPy median s | speed-up (median of pairs) "
             "| speed-up (best / best) | Numba people/s |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["steady_state"]:
        lines.append(f"| {r['people']:,} | {r['dataset']}/{r['protocol']} | {r['numba']['median_s']:.4f} | "
                     f"{r['numpy']['median_s']:.4f} | {r['speedup_median']:.1f}x | "
                     f"{r['speedup_best']:.1f}x | {r['people_per_s_numba']:,.0f} |")
    fc = result.get("first_call")
    if fc:
        lines += ["", "First call in a fresh process (2,000 people, private NUMBA_CACHE_DIR):", "",
                  "| run | import numba s | import metrics s | first call lsp/dtf s "
                  "| first call mpii/official s | second call lsp/dtf s | first parallel call s "
                  "| cache hits/misses |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for label in FIRST_CALL_RUNS:
            if label not in fc:
                continue
            c = fc[label]
            par = c.get("first_parallel_call_s")
            lines.append(f"| {label} | {c['import_numba_s']:.3f} | {c['import_metrics_s']:.3f} | "
                         f"{c['first_call_s']['lsp/dtf']:.3f} | {c['first_call_s']['mpii/official']:.3f} | "
                         f"{c['second_call_s']['lsp/dtf']:.4f} | {'-' if par is None else f'{par:.3f}'} | "
                         f"{c['cache_hits']}/{c['cache_misses']} |")
        if "compile_s" in fc:
            lines += ["", "Compile time (cold - cached first call): " + ", ".join(
                f"{case} {s:.2f} s" for case, s in fc["compile_s"].items()) + "."]
    return "\n".join(lines) + "\n"
