"""Benchmark: ``deeppose_fast.metrics.evaluate`` with the Numba kernels against the vectorised NumPy
reference, at several numbers of people, plus the first-call cost in a fresh process (cold compile vs
cached load).

    python benchmarks/bench_metrics.py                       # 2k, 100k, 1M people, 5 repeats
    python benchmarks/bench_metrics.py --sizes 2000 --repeats 2 --json out.json --markdown out.md

Method: the same synthetic float32 data (predictions = ground truth + Gaussian noise, 8 % of joints
unannotated, 3 % of predictions missing) goes through both backends, which must agree. Steady state:
after one untimed warm-up call each (compile or cache load), ``repeats`` calls per backend, alternating
Numba and NumPy so that each pair sees the same load; the speed-up is the median of the per-pair ratios.
First call = time of the first ``evaluate`` in a new Python process, with a private, initially empty
``NUMBA_CACHE_DIR``: the first process compiles (cold), the next ones load the cache it wrote (cached; and
cached with SciPy imported beforehand); interpreter start-up and imports are reported apart.

``run(sizes, repeats)`` returns the same dict the script writes as JSON (for ``deeppose-fast bench``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

CASES = (("lsp", "dtf"), ("mpii", "official"))
DEFAULT_SIZES = (2_000, 100_000, 1_000_000)
BACKENDS = ("numba", "numpy")


def make_data(n: int, dataset: str, seed: int = 0, dtype=np.float32) -> dict:
    """Synthetic evaluation inputs: pred, gt (N, K, 2), head_box (N, 4), as ``PoseData`` holds them."""
    from deeppose_fast import skeleton
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
    from deeppose_fast.metrics import evaluate
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
if sys.argv[2] == "scipy":  # as in an evaluation run that already read .mat files with scipy
    import scipy.linalg
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
from deeppose_fast.metrics import evaluate, kernels
t2 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from bench_metrics import make_data, CASES
out = {"import_numba_s": t1 - t0, "import_metrics_s": t2 - t1, "first_call_s": {}, "second_call_s": {}}
for dataset, protocol in CASES:
    d = make_data(2000, dataset)
    for key in ("first_call_s", "second_call_s"):
        t = time.perf_counter()
        evaluate(d["pred"], d["gt"], dataset, protocol, head_box=d["head_box"])
        out[key][dataset + "/" + protocol] = time.perf_counter() - t
kernels.PARALLEL_MIN_PEOPLE = 0  # 2,000 people ran single-threaded: now the parallel kernel's first call
t = time.perf_counter()
evaluate(d["pred"], d["gt"], dataset, protocol, head_box=d["head_box"])
out["first_parallel_call_s"] = time.perf_counter() - t
stats = [kernels._fused_serial.stats, kernels._fused_parallel.stats]
out["cache_hits"] = sum(sum(s.cache_hits.values()) for s in stats)
out["cache_misses"] = sum(sum(s.cache_misses.values()) for s in stats)
print(json.dumps(out))
"""


def first_call() -> dict:
    """First-call times in fresh processes sharing a private, initially empty cache: ``cold`` (compiles
    and writes the cache), ``cached`` (loads it), ``cached + scipy`` (loads it, SciPy imported before)."""
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        out = {}
        # "cached + scipy": Numba's first dispatch imports scipy.linalg (its BLAS check) when SciPy is
        # installed; a process that already imported SciPy does not pay that again
        for label, pre in (("cold", "-"), ("cached", "-"), ("cached + scipy", "scipy")):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(Path(__file__).resolve().parent), pre],
                                  env=env, capture_output=True, text=True, cwd=str(REPO))
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(f"first-call child failed:\n{proc.stderr}")
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            out[label]["process_wall_s"] = wall
    return out


def environment() -> dict:
    import numba

    import deeppose_fast
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "deeppose_fast": deeppose_fast.__version__, "cpu": cpu, "cores": cores,
            "numba_threads": numba.get_num_threads(), "threading_layer": _threading_layer(),
            "platform": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def _threading_layer() -> str:
    from deeppose_fast.metrics import kernels
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        kernels.joint_errors(np.zeros((1, 1, 2)), np.zeros((1, 1, 2)))
        return numba.threading_layer()


def run(sizes=DEFAULT_SIZES, repeats: int = 5, *, include_first_call: bool = True) -> dict:
    """Run the benchmark; return ``{"environment", "date", "sizes", "repeats", "steady_state",
    "first_call"}`` (seconds)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    result = {"benchmark": "metrics", "date": now.isoformat(timespec="seconds"),
              "sizes": list(sizes), "repeats": repeats}
    if include_first_call:
        result["first_call"] = first_call()
    result["steady_state"] = steady_state(sizes, repeats)
    result["environment"] = environment()
    return result


def markdown(result: dict, command: str = "") -> str:
    """The result as Markdown tables."""
    env = result["environment"]
    lines = ["# Metrics benchmark: Numba kernels vs NumPy reference", "",
             f"- date: {result['date']}", f"- command: `{command}`" if command else "",
             f"- CPU: {env['cpu']}, {env['cores']} cores visible, Numba threads {env['numba_threads']} "
             f"({env['threading_layer']}); load average at the end {env['load_average']}",
             f"- Python {env['python']}, NumPy {env['numpy']}, Numba {env['numba']}, "
             f"deeppose-fast {env['deeppose_fast']}", "",
             "## Steady state (`evaluate()` end to end, float32 input, "
             f"{result['repeats']} alternating calls per backend after a warm-up)", "",
             "| people | dataset/protocol | Numba median s | NumPy median s | speed-up (median of pairs) "
             "| speed-up (best / best) | Numba people/s |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["steady_state"]:
        lines.append(f"| {r['people']:,} | {r['dataset']}/{r['protocol']} | {r['numba']['median_s']:.4f} | "
                     f"{r['numpy']['median_s']:.4f} | {r['speedup_median']:.1f}x | "
                     f"{r['speedup_best']:.1f}x | "
                     f"{r['people_per_s_numba']:,.0f} |")
    fc = result.get("first_call")
    if fc:
        lines += ["", "## First call in a fresh process (2,000 people, private NUMBA_CACHE_DIR)", "",
                  "| run | import numba s | import metrics s | first call lsp/dtf s "
                  "| first call mpii/official s "
                  "| second call lsp/dtf s | first parallel call s | cache hits/misses |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for label in fc:
            c = fc[label]
            lines.append(f"| {label} | {c['import_numba_s']:.3f} | {c['import_metrics_s']:.3f} | "
                         f"{c['first_call_s']['lsp/dtf']:.3f} | {c['first_call_s']['mpii/official']:.3f} | "
                         f"{c['second_call_s']['lsp/dtf']:.4f} | {c['first_parallel_call_s']:.3f} | "
                         f"{c['cache_hits']}/{c['cache_misses']} |")
    return "\n".join(line for line in lines if line is not None) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="numbers of people")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per size and backend")
    ap.add_argument("--no-first-call", action="store_true", help="skip the fresh-process measurements")
    ap.add_argument("--json", help="write the result as JSON to this file ('-': standard output)")
    ap.add_argument("--markdown", type=Path, help="write the tables as Markdown here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or any(n < 1 for n in args.sizes):
        ap.error("--repeats and --sizes must be >= 1")
    result = run(args.sizes, args.repeats, include_first_call=not args.no_first_call)
    command = "python benchmarks/bench_metrics.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(result, command.strip())
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(text)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
