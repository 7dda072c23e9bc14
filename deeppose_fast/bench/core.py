"""Measurement plumbing shared by every benchmark stage: repeat timing, peak RSS, machine facts, workers.

A stage is measured in its own Python process (``python -m deeppose_fast.bench.worker STAGE JSON``) so
that its peak RSS is its own and one stage's caches (decoded images, compiled kernels, TF graphs) cannot
flatter the next. A worker prints its result as one line ``BENCH_RESULT {json}``; the marker is searched
anywhere in a line because ``horovodrun`` prefixes every line with the rank.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

RESULT_MARKER = "BENCH_RESULT "


@dataclass
class Timing:
    """Repeated measurements of one rate (items per second), warm-up excluded, with the CPU seconds
    (user + system, all threads of the process) spent per item in each repeat and, when the input was
    fetched apart (``measure_rate``'s ``fetch``), the fraction of each repeat spent waiting for it."""

    values: list[float]
    unit: str = "items/s"
    cpu_s_per_item: list[float] = field(default_factory=list)
    wait_fraction: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """Half the range of the repeats, relative to the median (0.05 = +-5 %)."""
        return spread(self.values)

    def to_dict(self) -> dict:
        out = {"median": self.median, "spread": self.spread, "values": self.values, "unit": self.unit}
        if self.cpu_s_per_item:
            out["cpu_s_per_1000"] = 1000 * statistics.median(self.cpu_s_per_item)
        if self.wait_fraction:
            out["wait_fraction"] = self.wait_fraction
            out["wait_fraction_median"] = statistics.median(self.wait_fraction)
        return out


def spread(values) -> float:
    """Half the range of ``values`` relative to their median (0 for fewer than two values)."""
    values = list(values)
    if len(values) < 2:
        return 0.0
    m = statistics.median(values)
    return (max(values) - min(values)) / 2 / m if m else 0.0


def measure_rate(step: Callable[..., int], *, warmup: int, repeats: int, min_seconds: float = 0.0,
                 min_calls: int = 1, unit: str = "items/s", fetch: Callable[[], object] | None = None) -> Timing:
    """The one timing loop of every stage. Call ``step`` (which does some work and returns how many items
    it processed) ``warmup`` times unmeasured, then ``repeats`` times measured; each repeat calls it at
    least ``min_calls`` times and until ``min_seconds`` passed. With ``fetch``, each call is
    ``step(fetch())`` and the time blocked in ``fetch()`` is reported as ``wait_fraction`` (waiting for
    input / total time)."""

    def call() -> tuple[int, float]:
        if fetch is None:
            return step(), 0.0
        t0 = time.perf_counter()
        item = fetch()
        waited = time.perf_counter() - t0
        return step(item), waited

    for _ in range(warmup):
        call()
    values, cpu, waits = [], [], []
    for _ in range(repeats):
        items, calls, wait, start, cpu0 = 0, 0, 0.0, time.perf_counter(), time.process_time()
        while True:
            n, waited = call()
            items, calls, wait = items + n, calls + 1, wait + waited
            elapsed = time.perf_counter() - start
            if calls >= min_calls and elapsed >= min_seconds:
                break
        values.append(items / elapsed)
        cpu.append((time.process_time() - cpu0) / max(items, 1))
        waits.append(wait / elapsed)
    return Timing(values, unit, cpu, waits if fetch is not None else [])


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_names() -> list[str]:
    """``name, memory, driver`` of each NVIDIA GPU that ``nvidia-smi`` lists (empty without one)."""
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def system_info() -> dict:
    """Hardware and software facts recorded beside every result."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {name: _version(dist) for name, dist in [
        ("deeppose-fast", "deeppose-fast"), ("tensorflow-cpu", "tensorflow-cpu"), ("tensorflow", "tensorflow"),
        ("keras", "keras"), ("nvidia-dali", "nvidia-dali-cuda120"), ("horovod", "horovod"), ("numba", "numba"),
        ("numpy", "numpy"), ("opencv", "opencv-python-headless")]}
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable_cpus(),
        "memory_gib": round(mem_gb, 1),
        "gpus": gpu_names(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {k: v for k, v in versions.items() if v},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def emit(result: dict) -> None:
    """Print a worker's result where ``parse_result`` finds it."""
    print(RESULT_MARKER + json.dumps(result), flush=True)


def parse_results(stdout: str) -> list[dict]:
    """Every ``BENCH_RESULT`` JSON object in a worker's (or horovodrun's) standard output."""
    found = []
    for line in stdout.splitlines():
        at = line.find(RESULT_MARKER)
        if at >= 0:
            found.append(json.loads(line[at + len(RESULT_MARKER):]))
    return found


def run_command(cmd: list[str], what: str, *, timeout: float | None = None, env: dict | None = None) -> dict:
    """Run a worker command; return the last result it printed. Raises RuntimeError naming ``what``
    with the tail of its output if it fails, prints nothing or runs past ``timeout`` seconds."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"benchmark {what} ran past its limit of {timeout:.0f} s") from None
    results = parse_results(proc.stdout)
    if proc.returncode != 0 or not results:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"benchmark {what} failed (exit {proc.returncode}"
                           f"{', no result printed' if not results else ''}):\n{tail}")
    return results[-1]


def worker_command(stage: str, params: dict) -> list[str]:
    return [sys.executable, "-m", "deeppose_fast.bench.worker", stage, json.dumps(params)]


def run_worker(stage: str, params: dict, *, timeout: float | None = None, env: dict | None = None) -> dict:
    """Run one stage's worker in a fresh interpreter and return its result."""
    name = params.get("name")
    return run_command(worker_command(stage, params), f"{stage}{' ' + name if name else ''}",
                       timeout=timeout, env=env)


def interleave(stage: str, jobs: dict[str, dict], rounds: int, *, timeout: float | None = None,
               env: dict | None = None) -> dict[str, dict]:
    """Run each job (name -> worker params) ``rounds`` times, alternating (A B A B ...) so that a load
    changing during the run hits every job alike, a fresh process each; merge each job's results:
    rate values and CPU costs concatenated, the largest peak RSS, the median of other numbers."""
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, params in jobs.items():
            runs[name].append(run_worker(stage, {**params, "name": name}, timeout=timeout, env=env))
    return {name: merge_runs(rs) for name, rs in runs.items()}


def merge_runs(runs: list[dict]) -> dict:
    """One row from several worker results of the same job (see ``interleave``)."""
    out = dict(runs[-1])
    for key, value in runs[-1].items():
        if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            out[key] = [v for r in runs for v in r[key]]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in runs]
            out[key] = max(vals) if key == "peak_rss_mib" else statistics.median(vals)
    if "values" in out:
        out["median"] = statistics.median(out["values"])
        out["spread"] = spread(out["values"])
    out["processes"] = len(runs)
    return out


def table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the first column left-aligned, the others right-aligned (numbers)."""
    return (["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def rate_cells(r: dict) -> list[str]:
    """The median and spread cells of a rate row."""
    return [f"{r['median']:.1f}", f"±{100 * r['spread']:.0f} %"]


def compare(stage: str, key: str, names: list[str], allowed, params: dict, rounds: int, *,
            timeout: float | None = None) -> dict:
    """Measure the jobs ``names`` (each one of ``allowed``: loaders, variants, input sources) of one stage
    with the same ``params``, interleaved over ``rounds``. Returns ``{"params": {..., "rounds", key:
    names}, "rows": [{"name", ...merged result}]}``."""
    bad = sorted(set(names) - set(allowed))
    if bad or not names:
        raise ValueError(f"unknown {key} {bad}; expected some of {', '.join(allowed)}")
    merged = interleave(stage, {name: params for name in names}, rounds, timeout=timeout)
    return {"params": {**params, "rounds": rounds, key: list(names)},
            "rows": [{"name": name, **merged[name]} for name in names]}


def repeats_note(p: dict, what: str) -> str:
    """How a stage's rates were taken, from its params: rounds x repeats x ``what`` after warm-up."""
    rounds = f"{p['rounds']} interleaved round(s) x " if "rounds" in p else ""
    return f"{rounds}{p['repeats']} repeats x >= {p['batches']} {what} after {p['warmup']} warm-up"


def write_outputs(record: dict, text: str, json_path=None, markdown_path=None) -> None:
    """Write ``record`` as JSON to ``json_path`` and ``text`` to ``markdown_path`` (either may be None),
    creating parent folders."""
    for path, content in ((json_path, json.dumps(record, indent=1) + "\n"), (markdown_path, text)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content)
