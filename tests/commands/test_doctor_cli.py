"""`deeppose-fast doctor`: the table on stdout, `--json`, `--no-bench`, exit status 0 on this CPU host (every
GPU check skipped with its reason) and 1 when the native operator's library does not match its sources."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from deeppose_fast.cli import main
from deeppose_fast.pipeline import contract, native


def run(*args):
    return CliRunner().invoke(main, ["doctor", *map(str, args)])


@pytest.mark.skipif(contract.gpu_available(), reason="the CPU report: DALI sees a GPU here")
def test_doctor_on_a_cpu_host(tmp_path):
    out = tmp_path / "doctor.json"
    r = run("--no-bench", "--json", out)
    assert r.exit_code == 0, r.output
    assert re.search(r"PASS\s+tensorflow\s+\d+\.\d+", r.output)
    assert re.search(r"SKIP\s+gpu parity: eval_crop_parity\s+DALI sees no CUDA device", r.output)
    assert re.search(r"SKIP\s+gpu training step\s+TensorFlow sees no GPU", r.output)
    assert re.search(r"SKIP\s+nccl allreduce\s+TensorFlow sees no GPU", r.output)
    assert re.search(r"SKIP\s+gpu bench\s+not asked for \(--no-bench\)", r.output)
    assert f"wrote {out}" in r.output
    report = json.loads(out.read_text())
    assert report["ok"] and {c["status"] for c in report["checks"]} == {"pass", "skip"}
    for c in report["checks"]:
        assert re.search(rf"{c['status'].upper()}\s+{re.escape(c['name'])}\s", r.output)


def test_a_stale_native_library_exits_1_with_the_rebuild_command(tmp_path, monkeypatch):
    """A copy of the built library whose embedded source hash is not the sources' hash."""
    stale = tmp_path / native.library_path().name
    data = native.library_path().read_bytes()
    stale.write_bytes(data.replace(native.built_hash(native.library_path()).encode(), b"0" * 64))
    assert native.built_hash(stale) == "0" * 64
    monkeypatch.setattr(native, "library_path", lambda: stale)
    out = tmp_path / "doctor.json"
    r = run("--json", out)
    assert r.exit_code == 1, r.output
    assert re.search(r"FAIL\s+native operator\s+the native DALI operator \S+ is stale", r.output)
    assert "pip install --no-build-isolation --no-deps -e ." in r.output and "Traceback" not in r.output
    assert re.search(r"SKIP\s+gpu bench\s+TensorFlow sees no GPU", r.output)  # no --no-bench: no GPU, the reason
    report = json.loads(out.read_text())
    assert not report["ok"] and [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["native operator"]


def test_json_into_a_missing_folder_is_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    r = run("--json", missing / "doctor.json")
    assert r.exit_code == 1
    last = r.output.strip().splitlines()[-1]
    assert last == f"Error: --json {missing / 'doctor.json'}: folder {missing} does not exist"
    assert "Traceback" not in r.output and "PASS" not in r.output
