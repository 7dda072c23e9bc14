"""`deeppose-fast bench --quick`: runs every stage (each in its own process, horovodrun included), prints
the table and writes a JSON record with the hardware, versions, settings, command and sane numbers for
every stage. No test here asserts a speed. Bad options fail with one clear line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import horovod.tensorflow  # noqa: F401  (required: the quick run measures Horovod scaling)
import pytest
from click.testing import CliRunner

from deeppose_fast.bench.stages import NAMES as STAGES, TITLES
from deeppose_fast.cli import main

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick run of every stage at the smallest sizes (the default synthetic set, prepared into a
    private cache folder)."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [str(BIN / "deeppose-fast"), "bench", "--quick", "--cache-dir", str(out / "cache"),
           "--synthetic-images", "16", "--batch-size", "8", "--input-size", "80", "--batches", "2",
           "--metrics-sizes", "500", "--json", str(out / "bench.json"), "--markdown", str(out / "bench.md")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def _sane_rate(row):
    assert row["median"] > 0 and len(row["values"]) >= 2
    assert min(row["values"]) <= row["median"] <= max(row["values"])
    assert 0 <= row["spread"] < 10
    assert row["peak_rss_mib"] > 10


@pytest.mark.slow
@pytest.mark.distributed
def test_quick_run_records_every_stage(quick):
    proc, rec, md = quick
    assert rec["errors"] == {}
    assert list(rec["stages"]) == list(STAGES)
    assert rec["command"].startswith("deeppose-fast bench --quick --cache-dir")
    assert rec["system"]["cpus_usable"] >= 1 and "tensorflow-cpu" in rec["system"]["versions"]
    assert rec["settings"]["quick"] and rec["settings"]["batch_size"] == 8
    assert rec["data"]["train_people"] > 0 and rec["data"]["num_joints"] == 16

    pipe = {r["name"]: r for r in rec["stages"]["pipeline"]["rows"]}
    assert {"dali-cpu", "reference", "ram-cache"} <= set(pipe)
    for row in pipe.values():
        _sane_rate(row)
        assert row["unit"] == "crops/s" and row["cpu_s_per_1000"] > 0
    assert pipe["ram-cache"]["cached_images"] == rec["data"]["train_people"]

    (step,) = rec["stages"]["train-step"]["rows"]
    assert step["name"] == "fp32" and step["unit"] == "images/s"
    _sane_rate(step)

    (e2e,) = rec["stages"]["end-to-end"]["rows"]
    _sane_rate(e2e)
    assert all(0 <= w <= 1 for w in e2e["wait_fraction"])

    metrics = rec["stages"]["metrics"]
    assert {(r["people"], r["dataset"]) for r in metrics["steady_state"]} == {(500, "lsp"), (500, "mpii")}
    for r in metrics["steady_state"]:
        assert r["numba"]["median_s"] > 0 and r["numpy"]["median_s"] > 0 and r["speedup_median"] > 0
    fc = metrics["first_call"]
    assert fc["cold"]["cache_misses"] > 0 and fc["cached"]["cache_misses"] == 0
    assert set(fc["compile_s"]) == {"lsp/dtf", "mpii/official"}

    hvd = rec["stages"]["horovod"]["rows"]
    assert [r["ranks"] for r in hvd] == [1, 2]
    for r in hvd:
        _sane_rate(r)
        assert len(r["per_rank_median"]) == r["ranks"] and r["efficiency"] > 0
    assert hvd[0]["efficiency"] == 1.0

    cascade = rec["stages"]["cascade"]
    crops = {r["name"]: r for r in cascade["crops"]["rows"]}
    assert {"dali-cpu", "dali-cpu-joints"} <= set(crops)
    for row in crops.values():
        _sane_rate(row)
        assert row["unit"] == "crops/s" and row["cpu_s_per_1000"] > 0
    jobs = {r["name"]: r for r in cascade["inference"]["rows"]}
    assert set(jobs) == {"stage1", "stage1+2"}
    for row in jobs.values():
        _sane_rate(row)
        assert row["unit"] == "people/s"
    assert jobs["stage1"]["crops_per_person"] == 1 and jobs["stage1+2"]["crops_per_person"] == 17

    for name in STAGES:
        assert f"## {TITLES[name]}" in md and f"## {TITLES[name]}" in proc.stdout


def run(*args):
    return CliRunner().invoke(main, ["bench", *map(str, args)])


def test_unknown_stage_is_one_clear_error():
    r = run("--stages", "pipeline,warp-speed")
    assert r.exit_code == 2 and "warp-speed not among" in r.output


def test_bad_ranks_and_preset_are_clear_errors():
    r = run("--ranks", "1,zero")
    assert r.exit_code == 2 and "comma-separated int" in r.output
    r = run("--preset", "nope", "--stages", "metrics")
    assert r.exit_code == 2 and "unknown preset 'nope'" in r.output


def test_data_that_is_not_prepared_is_a_clear_error(tmp_path):
    r = run("--data", tmp_path, "--stages", "metrics")
    assert r.exit_code == 1 and "not a prepared data set" in r.output and "deeppose-fast prepare" in r.output


@pytest.mark.parametrize("option, value, valid", [("--stages", "", STAGES), ("--stages", " , ", STAGES),
                                                  ("--loaders", "", ("dali-cpu", "reference")),
                                                  ("--ranks", "", ())])
def test_an_empty_list_names_the_option_and_its_choices(option, value, valid):
    r = run(option, value)
    assert r.exit_code == 2 and f"Invalid value for '{option}'" in r.output and "Traceback" not in r.output
    assert "expected a comma-separated list" in r.output
    for name in valid:
        assert name in r.output
