"""The scripts in benchmarks/ are thin wrappers over deeppose_fast.bench and keep their options working."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_bench_metrics_script(tmp_path):
    md = tmp_path / "m.md"
    proc = script("bench_metrics.py", "--sizes", "300", "--repeats", "2", "--no-first-call", "--json", "-",
                  "--markdown", str(md), cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert [(r["people"], r["dataset"]) for r in result["steady_state"]] == [(300, "lsp"), (300, "mpii")]
    assert all(len(r["numba"]["times_s"]) == 2 for r in result["steady_state"])
    text = md.read_text()
    assert "command: `python benchmarks/bench_metrics.py --sizes 300" in text and "| 300 | lsp/dtf |" in text


def test_bench_pipeline_script(tmp_path):
    import warnings

    from deeppose_fast.datasets import DatasetWarning
    from deeppose_fast.datasets.prepare import prepare

    data = tmp_path / "data"
    with warnings.catch_warnings():  # the generator's people without joints are skipped, with a warning
        warnings.simplefilter("ignore", DatasetWarning)
        prepare("synthetic", data, num_images=8, workers=1, progress=False)
    out = tmp_path / "p.json"
    proc = script("bench_pipeline.py", "--data", str(data), "--loaders", "reference", "ram-cache",
                  "--batch-size", "4", "--input-size", "48", "--batches", "2", "--repeats", "1", "--rounds", "2",
                  "--warmup", "1", "--json", str(out), cwd=tmp_path)
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["rows"]] == ["reference", "ram-cache"]
    assert all(len(r["values"]) == 2 and r["processes"] == 2 for r in result["rows"])
    assert result["data"]["train_people"] > 0 and "| ram-cache |" in proc.stdout
