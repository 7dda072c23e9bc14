"""``deeppose_fast.doctor.run_checks``: on this CPU host it reports the versions, passes, and skips the GPU
parity checks with the reason; a stale or missing native build, a library that does not import, or a
parity figure out of bounds is a failed check with a one-line reason."""
from __future__ import annotations

import json
import shutil

import pytest

from deeppose_fast import doctor
from deeppose_fast.pipeline import contract, native, parity

VERSIONED = ("python", "tensorflow", "keras", "dali", "numba", "opencv", "horovod")
REBUILD = "pip install --no-build-isolation --no-deps -e ."


def by_name(report: dict) -> dict:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture(scope="module")
def report():
    return doctor.run_checks()


@pytest.mark.skipif(contract.gpu_available(), reason="the CPU report: DALI sees a GPU here")
def test_cpu_host_passes_with_the_gpu_checks_skipped(report):
    checks = by_name(report)
    assert report["ok"] and report["counts"]["fail"] == 0, doctor.format_report(report)
    for name in VERSIONED:
        assert checks[name]["status"] == "pass" and checks[name]["data"]["version"], checks[name]
    assert checks["tensorflow"]["detail"] == checks["tensorflow"]["data"]["version"]
    assert "gloo" in checks["horovod"]["data"]["built_with"]
    assert checks["nvimagecodec"]["status"] in ("pass", "skip")
    assert checks["tensorflow GPUs"]["data"]["gpus"] == [] and checks["dali sees a GPU"]["data"]["gpu"] is False
    assert checks["native operator"]["status"] == "pass"
    gpu = [c for c in report["checks"] if c["name"].startswith("gpu parity")]
    assert [c["name"] for c in gpu] == [f"gpu parity: {f.__name__}" for f in parity.CHECKS]
    assert all(c["status"] == "skip" and c["detail"] == "DALI sees no CUDA device" for c in gpu)


def test_every_check_has_a_status_and_the_report_is_json(report):
    assert json.loads(json.dumps(report)) == report
    assert all(c["status"] in ("pass", "fail", "skip") and c["detail"] for c in report["checks"])
    assert report["counts"] == {s: sum(c["status"] == s for c in report["checks"]) for s in ("pass", "fail", "skip")}
    table = doctor.format_report(report).splitlines()
    assert len(table) == len(report["checks"]) + 2
    assert table[-1].startswith(f"{report['counts']['pass']} passed, {report['counts']['fail']} failed")


def test_a_stale_native_build_fails_with_the_rebuild_command(tmp_path):
    """The sources beside a copy of csrc/ with one changed byte: the built library no longer matches."""
    for rel in native.SOURCES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(native.SOURCE_ROOT / rel, tmp_path / rel)
    with open(tmp_path / native.SOURCES[-1], "a") as f:
        f.write("// changed\n")
    report = doctor.run_checks(native_source_root=tmp_path)
    check = by_name(report)["native operator"]
    assert check["status"] == "fail" and "stale" in check["detail"] and REBUILD in check["detail"]
    assert not report["ok"] and report["counts"]["fail"] >= 1


def test_a_missing_native_build_fails_with_the_rebuild_command(tmp_path):
    check = doctor.native_check(tmp_path / "pose_crop.so")
    assert check["status"] == "fail" and "missing" in check["detail"] and REBUILD in check["detail"]


def test_a_library_that_does_not_import_is_reported_not_raised(monkeypatch):
    real = doctor._import

    def fake(module):
        if module == "cv2":
            raise ImportError("libGL.so.1: cannot open shared object file\nsecond line")
        if module == "nvidia.dali":
            raise RuntimeError("CUDA driver version is insufficient")
        if module == "nvidia.nvimgcodec":
            raise ModuleNotFoundError("No module named 'nvidia.nvimgcodec'")
        if module.startswith("horovod"):
            raise OSError("undefined symbol: _ZN10tensorflow")
        return real(module)

    monkeypatch.setattr(doctor, "_import", fake)
    checks = by_name(doctor.run_checks())
    assert checks["opencv"] == {"name": "opencv", "status": "fail", "data": {"version": None},
                                "detail": "does not import (ImportError: libGL.so.1: cannot open shared object file)"}
    assert checks["nvimagecodec"]["status"] == "skip" and checks["nvimagecodec"]["detail"] == "not installed"
    assert checks["horovod"]["status"] == "fail" and "OSError: undefined symbol" in checks["horovod"]["detail"]
    assert checks["dali"]["status"] == "fail" and checks["dali"]["detail"].startswith("does not import (RuntimeError")
    assert checks["tensorflow"]["status"] == "pass"


def test_parity_checks_where_a_gpu_is_present_report_figures_and_failures(tmp_path):
    """The GPU branch, with stand-ins for the parity functions (no GPU here)."""
    def within(dot_dir, other):
        r = parity.ParityResult("within")
        r.add("pixels max |diff| grey", 0.25, "<=", parity.CROP_MAX_GREY)
        return r

    def beyond(dot_dir, other):
        r = within(dot_dir, other)
        r.add("worst image's mean |diff| grey", 1.5, "<=", parity.JPEG_MEAN_GREY)
        return r

    def broken(dot_dir, other):
        assert (dot_dir / "manifest.json").is_file() and other == "gpu"
        raise RuntimeError("nvImageCodec: INTERNAL_ERROR\n  at ...")

    ok, bad, err = doctor.parity_checks(True, tmp_path, checks=(within, beyond, broken))
    assert ok["status"] == "pass" and ok["data"]["figures"][0]["value"] == 0.25
    assert bad["status"] == "fail" and bad["detail"] == "worst image's mean |diff| grey = 1.5 (needs <= 1)"
    assert err == {"name": "gpu parity: broken", "status": "fail",
                   "detail": "RuntimeError: nvImageCodec: INTERNAL_ERROR"}
    assert list(tmp_path.iterdir()) == []  # the temporary data set is gone
