"""Benchmark: training crops per second of the DALI pipeline against the OpenCV + NumPy reference loader
(and, with ``--loaders ... ram-cache``, a loader that decodes the whole split into RAM first, as the
reference implementation did), side by side in one run, with the peak RSS of each; on a GPU host also the
DALI GPU pipeline. A thin wrapper over ``deeppose_fast.bench.pipeline`` (stage 1 of ``deeppose-fast
bench``), which documents the method: each loader in fresh processes, interleaved rounds, warm-up
excluded, median and spread of the timed runs, CPU seconds per 1000 crops.

    python benchmarks/bench_pipeline.py --data data/synthetic            # a folder made by `prepare`
    python benchmarks/bench_pipeline.py --synthetic small --batches 20   # prepares the synthetic preset
    python benchmarks/bench_pipeline.py --data DIR --json out.json --markdown out.md
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from deeppose_fast.bench import core, pipeline  # noqa: E402
from deeppose_fast.bench.runner import prepared_data, Settings  # noqa: E402


def prepare_synthetic(preset: str, cache: Path) -> Path:
    """The synthetic data set of a generator preset, prepared once into ``cache`` (reused when complete)."""
    out = cache / f"synthetic-{preset}"
    if not (out / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "deeppose_fast.cli", "prepare", "synthetic", "--preset", preset,
                        "--out", str(out), "--quiet"], check=True)
    return out


def run(data, **kwargs) -> dict:
    """``pipeline.run`` plus the date, the machine and the data set: the dict this script writes as JSON."""
    _, summary = prepared_data(Settings(data=str(data)))
    result = pipeline.run(data, **kwargs)
    return {"benchmark": "pipeline", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "system": core.system_info(), "data": summary, **result}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="a prepared data set folder (shards + manifest.json)")
    src.add_argument("--synthetic", choices=("small", "mpii"), help="prepare and use the synthetic preset")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "deeppose-fast" / "bench", help="where --synthetic prepares its data")
    ap.add_argument("--loaders", nargs="+", choices=pipeline.LOADERS, default=None,
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
    a = ap.parse_args(argv)
    if a.data is None and a.synthetic is None:
        ap.error("give --data DIR (a prepared folder) or --synthetic PRESET")
    data = a.data if a.data is not None else prepare_synthetic(a.synthetic, a.cache)
    loaders = a.loaders or [name for name in pipeline.default_loaders() if name != "ram-cache"]
    result = run(data, loaders=loaders, batch_size=a.batch_size, input_size=a.input_size, batches=a.batches,
                 repeats=a.repeats, rounds=a.rounds, warmup=a.warmup, threads=a.threads,
                 ext_range=tuple(a.ext_range), rotation=a.rotation, scale_jitter=a.scale_jitter)
    d, s = result["data"], result["system"]
    table = (f"Data: {d['name']} ({d['train_people']} train people, {d['path']}); {s['cpu']}, "
             f"{s['cpus_usable']} CPUs{', ' + ', '.join(s['gpus']) if s['gpus'] else ''}.\n\n"
             + pipeline.markdown(result))
    print(table)
    core.write_outputs(result, table, a.json, a.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
