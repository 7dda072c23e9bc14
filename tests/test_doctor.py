"""``deeppose_fast.doctor.run_checks``: on this CPU host it reports the versions, passes, and skips every GPU
check (parity, training step, allreduce, bench) with its reason; a stale or missing native build, a library
that does not import, a parity or step figure out of bounds, a GPU check that raises is a failed check
with a one-line reason. The GPU branches run here with stand-ins for the GPU work."""
from __future__ import annotations

import json
import shutil

import pytest

from deeppose_fast import doctor
from deeppose_fast.pipeline import contract, native, parity

GPU_CHECKS = [f"gpu parity: {f.__name__}" for f in parity.CHECKS] + ["gpu training step", "nccl allreduce",
                                                                     "gpu bench"]

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
    gpu = [c for c in report["checks"] if c["name"] in GPU_CHECKS]
    assert [c["name"] for c in gpu] == GPU_CHECKS  # every one reported, in order
    assert all(c["status"] == "skip" for c in gpu)
    assert {checks[n]["detail"] for n in GPU_CHECKS[:len(parity.CHECKS)]} == {"DALI sees no CUDA device"}
    assert checks["gpu training step"]["detail"] == "TensorFlow sees no GPU"
    assert checks["gpu bench"]["detail"] == "TensorFlow sees no GPU"
    nccl = checks["nccl allreduce"]["detail"]  # every reason that applies: here no GPU and Horovod without NCCL
    assert nccl.startswith("TensorFlow sees no GPU") and (
        "nccl" in checks["horovod"]["data"]["built_with"] or "Horovod was built without NCCL (with gloo" in nccl)
    assert report["seconds"] < 60  # no GPU work, no dot data set


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


def figures(value: float, limit: float, name: str = "max |diff| grey") -> parity.ParityResult:
    r = parity.ParityResult("stand-in")
    r.add(name, value, "<=", limit)
    return r


def test_parity_checks_where_a_gpu_is_present_report_figures_and_failures(tmp_path):
    """The GPU branch, with stand-ins for the parity functions (no GPU here)."""
    def within(dot_dir, other):
        return figures(0.25, parity.CROP_MAX_GREY, "pixels max |diff| grey")

    def beyond(dot_dir, other):
        r = within(dot_dir, other)
        r.add("worst image's mean |diff| grey", 1.5, "<=", parity.JPEG_MEAN_GREY)
        return r

    def broken(dot_dir, other):
        assert (dot_dir / "manifest.json").is_file() and other == "gpu"
        raise RuntimeError("nvImageCodec: INTERNAL_ERROR\n  at ...")

    ok, bad, err = doctor.parity_checks(True, doctor.DotData(tmp_path), checks=(within, beyond, broken))
    assert ok["status"] == "pass" and ok["data"]["figures"][0]["value"] == 0.25
    assert bad["status"] == "fail" and bad["detail"] == "worst image's mean |diff| grey = 1.5 (needs <= 1)"
    assert err == {"name": "gpu parity: broken", "status": "fail",
                   "detail": "RuntimeError: nvImageCodec: INTERNAL_ERROR"}


def test_a_dot_data_set_that_cannot_be_written_fails_the_checks_that_need_it(tmp_path, monkeypatch):
    tries = []

    def cannot(out_dir):
        tries.append(out_dir)
        raise OSError("No space left on device\nmore")

    monkeypatch.setattr(parity, "make_dot_data", cannot)
    dots = doctor.DotData(tmp_path)
    checks = doctor.parity_checks(True, dots, checks=(lambda d, o: figures(0, 1),) * 2)
    assert {c["detail"] for c in checks} == {"could not write the dot data set (OSError: No space left on device)"}
    bench = doctor.bench_check(["GPU:0"], True, dots, run=lambda *a: pytest.fail("ran without data"))
    assert bench["status"] == "fail" and bench["detail"] == "OSError: No space left on device"
    assert tries == [tmp_path / "dots"]  # tried once, the error given to every check that needs the data


def test_step_check_where_a_gpu_is_present():
    tol = 2e-3
    ok = doctor.step_check(["/physical_device:GPU:0"], run=lambda: figures(1e-6, tol, "update rel. L2 diff"))
    assert ok["status"] == "pass" and ok["data"]["figures"][0]["limit"] == tol
    bad = doctor.step_check(["/physical_device:GPU:0"], run=lambda: figures(0.01, tol, "update rel. L2 diff"))
    assert bad["status"] == "fail" and bad["detail"] == "update rel. L2 diff = 0.01 (needs <= 0.002)"

    def oom():
        raise RuntimeError("CUDA_ERROR_OUT_OF_MEMORY: out of memory\ndetails")

    assert doctor.step_check(["/physical_device:GPU:0"], run=oom)["detail"] == \
        "RuntimeError: CUDA_ERROR_OUT_OF_MEMORY: out of memory"
    assert doctor.step_check([], run=oom) == {"name": "gpu training step", "status": "skip",
                                             "detail": "TensorFlow sees no GPU"}


def test_allreduce_check_skips_with_every_reason_and_reports_the_run():
    gpus = ["/physical_device:GPU:0", "/physical_device:GPU:1"]
    never = lambda n: pytest.fail("ran though it should be skipped")  # noqa: E731
    one = doctor.allreduce_check(gpus[:1], ["gloo"], run=never)
    assert one["status"] == "skip" and one["detail"].startswith(
        "1 GPU: an allreduce between GPUs needs at least 2; Horovod was built without NCCL (with gloo")
    assert doctor.allreduce_check(gpus, None, run=never)["detail"] == "Horovod does not import (see the horovod check)"

    def run(n):
        r = parity.ParityResult("allreduce")
        r.add("ranks with the exact sum", n, "==", n)
        r.info.update(mb=64, seconds=0.0125, bus_gb_per_s=10.7, device="/device:GPU:0")
        return r

    ok = doctor.allreduce_check(gpus, ["gloo", "nccl"], run=run)
    assert ok["status"] == "pass" and ok["detail"] == "2 GPUs, exact sums; 64 MB in 12.5 ms (bus 10.7 GB/s)"
    assert ok["data"]["info"]["bus_gb_per_s"] == 10.7

    def wrong(n):
        r = run(n)
        r.add("ranks with the exact sum", 1, "==", n)
        return r

    bad = doctor.allreduce_check(gpus, ["gloo", "nccl"], run=wrong)
    assert bad["status"] == "fail" and bad["detail"] == "ranks with the exact sum = 1 (needs == 2)"


def test_bench_check_reports_its_figures_or_why_it_did_not_run(tmp_path):
    dots = doctor.DotData(tmp_path)
    calls = []

    def run(data, num_joints):
        calls.append((data, num_joints))
        return {"crops_per_s": 5123.4, "step_images_per_s": 2871.2, "end_to_end_images_per_s": 2650.0,
                "input_wait": 0.071, "seconds": 58.3,
                "params": {"loader": "dali-gpu", "variant": "bf16+xla", "preset": "mpii-scratch",
                           "input_size": 227, "batch_size": 64}}

    ok = doctor.bench_check(["/physical_device:GPU:0"], True, dots, run=run)
    assert calls == [(tmp_path / "dots", 14)]  # the dot data set, written on first use (LSP: 14 joints)
    assert ok["status"] == "pass" and ok["data"]["input_wait"] == 0.071
    assert ok["detail"] == ("5123 crops/s (dali-gpu, 227 px, batch 64, dot data); training step 2871 images/s "
                            "(bf16+xla, mpii-scratch network); 7 % of a step waiting for input (2650 images/s end "
                            "to end); 58 s")
    never = lambda *a: pytest.fail("ran though it should be skipped")  # noqa: E731
    for gpus, dali_gpu in ((["GPU:0"], True), ([], False)):  # --no-bench said first, GPU or not
        assert doctor.bench_check(gpus, dali_gpu, dots, enabled=False, run=never)["detail"] == \
            "not asked for (--no-bench)"
    assert doctor.bench_check([], True, dots, run=never)["detail"] == "TensorFlow sees no GPU"
    assert doctor.bench_check(["GPU:0"], False, dots, run=never)["detail"] == "DALI sees no CUDA device"
