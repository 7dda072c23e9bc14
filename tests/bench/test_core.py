"""bench.core: timing statistics, the worker result protocol (also through horovodrun's line prefixes),
merging interleaved runs, and clear errors from a failing worker."""
from __future__ import annotations

import sys
import time

import pytest

from deeppose_fast.bench import core


def test_timing_median_spread_and_cpu_cost():
    t = core.Timing([90.0, 100.0, 110.0], "crops/s", [0.002, 0.001, 0.003])
    assert t.median == 100.0
    assert t.spread == pytest.approx(0.1)
    d = t.to_dict()
    assert d["cpu_s_per_1000"] == pytest.approx(2.0) and d["unit"] == "crops/s"
    assert core.spread([5.0]) == 0.0


def test_measure_rate_excludes_warmup_and_honours_min_calls():
    calls = []

    def step():
        calls.append(1)
        return 4

    t = core.measure_rate(step, warmup=3, repeats=2, min_calls=5)
    assert len(calls) == 3 + 2 * 5
    assert len(t.values) == 2 and all(v > 0 for v in t.values)
    assert len(t.cpu_s_per_item) == 2


def test_measure_rate_reports_the_time_waiting_for_input():
    fetched = []

    def fetch():
        time.sleep(0.02)
        fetched.append(1)
        return 3

    def step(batch):
        time.sleep(0.02)
        return batch

    t = core.measure_rate(step, fetch=fetch, warmup=1, repeats=2, min_calls=3)
    assert len(fetched) == 1 + 2 * 3 and len(t.wait_fraction) == 2
    assert all(0.15 < w < 0.85 for w in t.wait_fraction)  # about half: as long fetching as stepping
    d = t.to_dict()
    assert d["wait_fraction"] == t.wait_fraction and 0.15 < d["wait_fraction_median"] < 0.85
    assert "wait_fraction" not in core.measure_rate(lambda: 1, warmup=0, repeats=1).to_dict()


def test_results_are_found_behind_horovodrun_prefixes():
    out = "noise\n[0]<stdout>:BENCH_RESULT {\"median\": 3.5}\n[1]<stderr>:warning\n"
    assert core.parse_results(out) == [{"median": 3.5}]


def test_merge_runs_concatenates_values_and_keeps_the_largest_rss():
    a = {"values": [1.0, 2.0], "median": 1.5, "peak_rss_mib": 100.0, "setup_s": 1.0, "unit": "x/s"}
    b = {"values": [3.0, 4.0], "median": 3.5, "peak_rss_mib": 120.0, "setup_s": 3.0, "unit": "x/s"}
    m = core.merge_runs([a, b])
    assert m["values"] == [1.0, 2.0, 3.0, 4.0]
    assert m["median"] == 2.5 and m["peak_rss_mib"] == 120.0 and m["setup_s"] == 2.0
    assert m["processes"] == 2 and m["unit"] == "x/s"


def test_a_failing_worker_names_itself_with_its_error():
    cmd = [sys.executable, "-c", "import sys; sys.exit('disk on fire')"]
    with pytest.raises(RuntimeError, match="(?s)benchmark demo failed.*disk on fire"):
        core.run_command(cmd, "demo")
    with pytest.raises(RuntimeError, match="no result printed"):
        core.run_command([sys.executable, "-c", "print('hello')"], "silent")


def test_system_info_records_hardware_and_versions():
    info = core.system_info()
    assert info["cpus_usable"] >= 1 and info["memory_gib"] > 0
    assert "numpy" in info["versions"] and info["python"].count(".") == 2
