"""Benchmark: training crops per second of the DALI pipeline against the OpenCV + NumPy reference loader
doing the same work, side by side in one run, with the peak RSS of each; on a GPU host also the DALI GPU
pipeline.

    python benchmarks/bench_pipeline.py --data data/synthetic            # a folder made by `prepare`
    python benchmarks/bench_pipeline.py --synthetic small --batches 20   # prepares the synthetic preset
    python benchmarks/bench_pipeline.py --data DIR --json out.json --markdown out.md

Same work: both read the train shards (tar, shuffled), decode the JPEG, compute the DTF crop geometry
(random box extension in ``--ext-range``, shift, flip with label swap), warp to S x S bilinear, normalise
per image and channel, and hand out NHWC float32 NumPy batches with targets and weights. DALI decodes only
the crop's region (``decoders.image_slice``); OpenCV cannot, so the reference decodes the whole JPEG.
Both use ``--threads`` worker threads (the reference: a thread pool, OpenCV's own threading off).

Method: each loader runs in fresh Python processes, so its peak RSS (``ru_maxrss``) is its own; the
loaders alternate over ``--rounds`` rounds (A B A B ...) so that a load changing during the run hits both;
in each process ``--warmup`` batches are discarded, then ``--repeats`` timed runs of ``--batches`` batches.
The table gives the median crops/s over all timed runs, the spread (half their range), CPU seconds per
1000 crops (user + system, all threads: the measure a shared machine disturbs least) and the largest peak
RSS. On a shared machine compare loaders within one run, and prefer the CPU column.

``run(data, ...)`` returns the dict this script writes as JSON (for a later ``deeppose-fast bench``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

LOADERS = ("dali-cpu", "reference", "dali-gpu")


# --- worker (one loader, in its own process) ---------------------------------------------------------
def _make_iterator(loader: str, p: dict):
    common = dict(batch_size=p["batch_size"], input_size=p["input_size"], ext_range=tuple(p["ext_range"]),
                  rotation=p["rotation"], scale_jitter=p["scale_jitter"], seed=p["seed"])
    if loader == "reference":
        import cv2
        cv2.setNumThreads(1)  # parallelism comes from the loader's thread pool, as in DALI
        from deeppose_fast.pipeline import reference
        it = reference.train_batches(p["data"], num_threads=p["threads"], **common)
        return lambda: next(it)["images"].shape[0]
    from deeppose_fast.pipeline import dali
    pipe = dali.build_train_pipeline(p["data"], device="gpu" if loader == "dali-gpu" else "cpu",
                                     num_threads=p["threads"], **common)
    pipe.build()

    def step():
        # hand NumPy arrays out, as the reference does (GPU images: including the copy to the host)
        arrays = [(o.as_cpu() if hasattr(o, "as_cpu") else o).as_array() for o in pipe.run()]
        return arrays[0].shape[0]

    return step


def worker(loader: str, p: dict) -> dict:
    """Measure one loader; returns crops/s per repeat, CPU time per 1000 crops and peak RSS (MiB)."""
    t0 = time.perf_counter()
    step = _make_iterator(loader, p)
    for _ in range(p["warmup"]):
        step()
    setup_s = time.perf_counter() - t0
    rates, cpu_per_k = [], []
    for _ in range(p["repeats"]):
        c0, w0, n = time.process_time(), time.perf_counter(), 0
        for _ in range(p["batches"]):
            n += step()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rates.append(n / wall)
        cpu_per_k.append(1000 * cpu / n)
    return {"loader": loader, "crops_per_s": rates, "cpu_s_per_1000": statistics.median(cpu_per_k),
            "setup_and_warmup_s": setup_s, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# --- driver --------------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def system_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    from deeppose_fast.pipeline.dali import gpu_available
    gpus = []
    if gpu_available():
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        gpus = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    return {"cpu": cpu, "cpus_usable": len(os.sched_getaffinity(0)), "gpus": gpus,
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": {d: _version(d) for d in ("deeppose-fast", "nvidia-dali-cuda120", "opencv-python-headless",
                                                  "numpy", "tensorflow-cpu", "tensorflow") if _version(d)}}


def _data_summary(data: Path) -> dict:
    from deeppose_fast.datasets import shards
    m = shards.read_manifest(data)
    return {"path": str(data), "name": m.get("name"), "train_people": m["splits"]["train"]["count"],
            "shards": len(m["splits"]["train"]["shards"])}


def prepare_synthetic(preset: str, cache: Path) -> Path:
    """The synthetic data set of a preset, prepared once into ``cache`` (reused when complete)."""
    out = cache / f"synthetic-{preset}"
    if not (out / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "deeppose_fast.cli", "prepare", "synthetic", "--preset", preset,
                        "--out", str(out), "--quiet"], check=True)
    return out


def _worker_process(loader: str, params: dict) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", loader,
                           "--params", json.dumps(params)], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
        raise RuntimeError(f"loader {loader!r} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


def run(data, *, loaders=("dali-cpu", "reference"), batch_size: int = 32, input_size: int = 227,
        batches: int = 20, repeats: int = 2, rounds: int = 3, warmup: int = 3, threads: int = 2,
        ext_range=(1.5, 2.0), rotation: float = 0.0, scale_jitter: float = 0.0, seed: int = 0) -> dict:
    """Measure the loaders in ``rounds`` interleaved rounds (A B A B ...: a load that changes during the run
    hits every loader alike), each round one fresh process per loader doing ``repeats`` timed runs.
    Returns ``{"benchmark", "date", "system", "data", "params", "results"}``."""
    data = Path(data).resolve()
    params = {"data": str(data), "batch_size": batch_size, "input_size": input_size, "batches": batches,
              "repeats": repeats, "rounds": rounds, "warmup": warmup, "threads": threads,
              "ext_range": list(ext_range), "rotation": rotation, "scale_jitter": scale_jitter, "seed": seed}
    runs = {loader: [] for loader in loaders}
    for _ in range(rounds):
        for loader in loaders:
            runs[loader].append(_worker_process(loader, params))
    results = []
    for loader, rs in runs.items():
        rates = [v for r in rs for v in r["crops_per_s"]]
        median = statistics.median(rates)
        results.append({"loader": loader, "crops_per_s": rates, "median_crops_per_s": median,
                        "spread": (max(rates) - min(rates)) / 2 / median,
                        "cpu_s_per_1000": statistics.median(r["cpu_s_per_1000"] for r in rs),
                        "setup_and_warmup_s": statistics.median(r["setup_and_warmup_s"] for r in rs),
                        "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)})
    return {"benchmark": "pipeline", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "system": system_info(), "data": _data_summary(data), "params": params, "results": results}


def markdown(result: dict) -> str:
    p, s = result["params"], result["system"]
    lines = [f"Training crops {p['input_size']} x {p['input_size']}, batch {p['batch_size']}, "
             f"{p['threads']} threads, ext {p['ext_range']}, rotation {p['rotation']}, "
             f"{p.get('rounds', 1)} interleaved rounds x {p['repeats']} x {p['batches']} batches after "
             f"{p['warmup']} warm-up; data: "
             f"{result['data']['name']} ({result['data']['train_people']} train people); "
             f"{s['cpu']}, {s['cpus_usable']} CPUs{', ' + ', '.join(s['gpus']) if s['gpus'] else ''}.", "",
             "| loader | crops/s (median) | spread | CPU s / 1000 crops | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|"]
    for r in result["results"]:
        lines.append(f"| {r['loader']} | {r['median_crops_per_s']:.1f} | ±{100 * r['spread']:.0f} % | "
                     f"{r['cpu_s_per_1000']:.2f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="a prepared data set folder (shards + manifest.json)")
    src.add_argument("--synthetic", choices=("small", "mpii"), help="prepare and use the synthetic preset")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "deeppose-fast" / "bench", help="where --synthetic prepares its data")
    ap.add_argument("--loaders", nargs="+", choices=LOADERS, default=None,
                    help="default: dali-cpu and reference, plus dali-gpu where a GPU is present")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=227)
    ap.add_argument("--batches", type=int, default=20, help="batches per timed repeat")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per process")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds, a fresh process per loader each")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ext-range", type=float, nargs=2, default=(1.5, 2.0))
    ap.add_argument("--rotation", type=float, default=0.0)
    ap.add_argument("--scale-jitter", type=float, default=0.0)
    ap.add_argument("--json", type=Path, help="write the result dict here")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--worker", choices=LOADERS, help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, json.loads(a.params))))
        return 0
    if a.data is None and a.synthetic is None:
        ap.error("give --data DIR (a prepared folder) or --synthetic PRESET")
    data = a.data if a.data is not None else prepare_synthetic(a.synthetic, a.cache)
    loaders = a.loaders
    if loaders is None:
        from deeppose_fast.pipeline.dali import gpu_available
        loaders = ["dali-cpu", "reference"] + (["dali-gpu"] if gpu_available() else [])
    result = run(data, loaders=loaders, batch_size=a.batch_size, input_size=a.input_size, batches=a.batches,
                 repeats=a.repeats, rounds=a.rounds, warmup=a.warmup, threads=a.threads,
                 ext_range=tuple(a.ext_range), rotation=a.rotation, scale_jitter=a.scale_jitter)
    table = markdown(result)
    print(table)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    if a.markdown:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
