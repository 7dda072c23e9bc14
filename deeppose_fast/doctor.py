"""``deeppose-fast doctor``: check a host before a long training.

``run_checks`` returns a report: versions of the libraries the package runs on (a library that does not
import is a failed check, not a crash), the GPUs TensorFlow and DALI see, whether the native operator
matches its sources, and, where there is a GPU: the backend parity checks of
``deeppose_fast.pipeline.parity`` (the ones the tests marked ``gpu`` make), a training step on the GPU
against the CPU, an allreduce over the local GPUs and a short GPU benchmark (``deeppose_fast.gpu_checks``).
Every check has a status: ``pass``, ``fail`` or ``skip`` (with the reason); the report passes when none
failed. Without a GPU every GPU check is skipped with its reason.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from deeppose_fast import __version__, gpu_checks
from deeppose_fast.pipeline import contract, native, parity

PASS, FAIL, SKIP = "pass", "fail", "skip"

# (check name, module to import, required): a required library that does not import fails the report
LIBRARIES = (
    ("tensorflow", "tensorflow", True),
    ("keras", "keras", True),
    ("dali", "nvidia.dali", True),
    ("nvimagecodec", "nvidia.nvimgcodec", False),  # DALI's image codec library; reported, not required
    ("numba", "numba", True),
    ("opencv", "cv2", True),
)
HOROVOD_BACKENDS = ("gloo", "nccl", "mpi")


def _check(name: str, status: str, detail: str, **data) -> dict:
    """One entry of the report."""
    return {"name": name, "status": status, "detail": detail, **({"data": data} if data else {})}


def _one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _import(module: str):
    """Import ``module`` by name. Late, inside the check: TensorFlow, DALI, Horovod and OpenCV are costly
    to import, and a library that fails to import must become a failed check instead of stopping doctor."""
    return importlib.import_module(module)


def _distribution_version(prefix: str) -> str | None:
    """The version of the first installed distribution whose name starts with ``prefix`` (pip metadata:
    ``nvidia-nvimgcodec-cu12``, ``-cu13``...), None when there is none."""
    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower().startswith(prefix):
            return dist.version
    return None


def library_check(name: str, module: str, required: bool) -> dict:
    """Import ``module`` and report its version; a failed import fails a required library and marks an
    optional one as not installed (skipped)."""
    try:
        mod = _import(module)
    except Exception as e:  # ImportError, or OSError / RuntimeError from a broken native library
        if not required and isinstance(e, ModuleNotFoundError):
            return _check(name, SKIP, "not installed", version=None)
        return _check(name, FAIL, f"does not import ({_one_line(e)})", version=None)
    version = getattr(mod, "__version__", None)
    if version is None and name == "nvimagecodec":
        version = _distribution_version("nvidia-nvimgcodec")
    return _check(name, PASS, str(version or "version unknown"), version=version)


def horovod_check() -> dict:
    """Horovod's version and the collectives it was built with (Gloo, NCCL, MPI)."""
    try:
        hvd = _import("horovod.tensorflow")
        version = _import("horovod").__version__
        built = [b for b in HOROVOD_BACKENDS if bool(getattr(hvd, f"{b}_built")())]
    except Exception as e:  # missing, or built against another TensorFlow (undefined symbols)
        return _check("horovod", FAIL, f"does not import ({_one_line(e)}); `bash scripts/setup.sh` builds it",
                      version=None, built_with=[])
    return _check("horovod", PASS, f"{version}, built with {', '.join(built) or 'nothing'}",
                  version=version, built_with=built)


def device_checks() -> tuple[list[dict], bool]:
    """The GPUs TensorFlow sees and whether DALI sees a CUDA device. A host where one of them sees a GPU
    and the other does not fails (training would run half on the CPU). Returns (checks, DALI sees a GPU)."""
    dali_gpu = contract.gpu_available()
    dali = _check("dali sees a GPU", PASS, "yes" if dali_gpu else "no CUDA device (CPU operators)", gpu=dali_gpu)
    try:
        tf = _import("tensorflow")
        names = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception as e:
        return [_check("tensorflow GPUs", FAIL, f"cannot list devices ({_one_line(e)})", gpus=[]), dali], dali_gpu
    status, detail = PASS, (f"{len(names)}: {', '.join(names)}" if names else "none (CPU only)")
    if names and not dali_gpu:
        status, detail = FAIL, f"{detail}; but DALI sees no CUDA device: the input pipeline would run on the CPU"
    elif dali_gpu and not names:
        status, detail = FAIL, ("none, but DALI sees a CUDA device: is tensorflow-cpu installed? "
                                "(`bash scripts/setup.sh` installs tensorflow[and-cuda] where nvidia-smi finds a GPU)")
    return [_check("tensorflow GPUs", status, detail, gpus=names), dali], dali_gpu


def native_check(path: Path | None = None, source_root: Path | None = None) -> dict:
    """Whether the native DALI operator exists and matches its sources (``native.check_build``); a failure
    names the command that rebuilds it."""
    try:
        built = native.check_build(path, source_root)
    except native.NativeBuildError as e:
        return _check("native operator", FAIL, str(e))
    return _check("native operator", PASS, f"{built} matches csrc/", path=str(built))


class DotData:
    """The dot data set of the parity checks and the GPU benchmark, written into ``root`` on first use
    (never on a host without a GPU); a failure to write it is raised again to every later user."""

    def __init__(self, root: Path):
        self.root = root
        self._path: Path | None = None
        self._error: Exception | None = None

    def path(self) -> Path:
        if self._error is None and self._path is None:
            try:
                self._path = parity.make_dot_data(self.root / "dots")
            except Exception as e:
                self._error = e
        if self._error is not None:
            raise self._error
        return self._path


def _from_result(name: str, result: parity.ParityResult) -> dict:
    """A check from a ``ParityResult``: pass when every figure keeps its bound; the figures (and any
    unbounded facts) in its data."""
    d = result.to_dict()
    return _check(name, PASS if result.passed else FAIL, result.summary(), figures=d["figures"],
                  **({"info": d["info"]} if d["info"] else {}))


def parity_checks(gpu: bool, dots: DotData, checks: tuple[Callable, ...] = parity.CHECKS) -> list[dict]:
    """The GPU parity checks on the small dot data set, each skipped where DALI sees no GPU."""
    names = [f"gpu parity: {c.__name__}" for c in checks]
    if not gpu:
        return [_check(n, SKIP, "DALI sees no CUDA device") for n in names]
    try:
        dot_dir = dots.path()
    except Exception as e:
        return [_check(n, FAIL, f"could not write the dot data set ({_one_line(e)})") for n in names]
    out = []
    for name, check in zip(names, checks):
        try:
            out.append(_from_result(name, check(dot_dir, "gpu")))
        except Exception as e:  # a GPU pipeline that does not build or run is a failed check
            out.append(_check(name, FAIL, _one_line(e)))
    return out


def step_check(tf_gpus: list[str], run: Callable = gpu_checks.step_parity) -> dict:
    """One training step of a small network on the GPU against the CPU (``gpu_checks.step_parity``);
    skipped where TensorFlow sees no GPU."""
    name = "gpu training step"
    if not tf_gpus:
        return _check(name, SKIP, "TensorFlow sees no GPU")
    try:
        return _from_result(name, run())
    except Exception as e:
        return _check(name, FAIL, _one_line(e))


def allreduce_check(tf_gpus: list[str], horovod_built_with: list[str] | None,
                    run: Callable = gpu_checks.allreduce) -> dict:
    """A Horovod allreduce of GPU tensors over every local GPU (``gpu_checks.allreduce``); skipped with
    the reason where TensorFlow sees no GPU, Horovod lacks NCCL or there is one GPU."""
    name = "nccl allreduce"
    reason = gpu_checks.allreduce_skip_reason(len(tf_gpus), horovod_built_with)
    if reason:
        return _check(name, SKIP, reason)
    try:
        result = run(len(tf_gpus))
    except Exception as e:
        return _check(name, FAIL, _one_line(e))
    check = _from_result(name, result)
    if result.passed and result.info:
        check["detail"] = (f"{len(tf_gpus)} GPUs, exact sums; {result.info['mb']:g} MB in "
                           f"{1000 * result.info['seconds']:.1f} ms (bus {result.info['bus_gb_per_s']:.1f} GB/s)")
    return check


def bench_check(tf_gpus: list[str], dali_gpu: bool, dots: DotData, enabled: bool = True,
                run: Callable = gpu_checks.bench) -> dict:
    """A short GPU benchmark (``gpu_checks.bench``) on the dot data set; skipped with the reason where
    TensorFlow or DALI sees no GPU or when not ``enabled``. It has no bound: it passes when it runs."""
    name = "gpu bench"
    reason = ("not asked for (--no-bench)" if not enabled else "TensorFlow sees no GPU" if not tf_gpus
              else "DALI sees no CUDA device" if not dali_gpu else None)
    if reason:
        return _check(name, SKIP, reason)
    try:
        data = dots.path()
        b = run(data, contract.split_info(data, "train").num_joints)
    except Exception as e:
        return _check(name, FAIL, _one_line(e))
    p = b["params"]
    detail = (f"{b['crops_per_s']:.0f} crops/s ({p['loader']}, {p['input_size']} px, batch {p['batch_size']}, "
              f"dot data); training step {b['step_images_per_s']:.0f} images/s ({p['variant']}, {p['preset']} "
              f"network); {100 * b['input_wait']:.0f} % of a step waiting for input "
              f"({b['end_to_end_images_per_s']:.0f} images/s end to end); {b['seconds']:.0f} s")
    return _check(name, PASS, detail, **b)


def run_checks(*, native_path: Path | None = None, native_source_root: Path | None = None,
               work_dir: Path | None = None, bench: bool = True) -> dict:
    """Run every check and return the report.

    Args:
        native_path, native_source_root: the operator library and source tree to compare (default: this
            package's build and checkout; see ``native.check_build``).
        work_dir: where the GPU checks' temporary dot data set goes (default: the system's temp folder).
        bench: run the GPU benchmark where there is a GPU (about a minute).
    Returns:
        ``{"deeppose_fast", "host", "python", "platform", "time", "seconds", "checks": [{"name", "status",
        "detail", "data"?}], "counts": {status: n}, "ok"}``; ``ok`` is False when a check failed.
    """
    start = time.perf_counter()
    checks = [_check("python", PASS, platform.python_version(), version=platform.python_version(),
                     executable=sys.executable)]
    checks += [library_check(*lib) for lib in LIBRARIES]
    horovod = horovod_check()
    checks.append(horovod)
    devices, dali_gpu = device_checks()
    checks += devices
    tf_gpus = devices[0]["data"]["gpus"]
    checks.append(native_check(native_path, native_source_root))
    if tf_gpus:
        parity.tf_memory_growth()  # before TensorFlow takes the GPUs: DALI and the workers share them
    with tempfile.TemporaryDirectory(prefix="deeppose-doctor-", dir=work_dir) as tmp:
        dots = DotData(Path(tmp))
        checks += parity_checks(dali_gpu, dots)
        checks.append(step_check(tf_gpus))
        checks.append(allreduce_check(tf_gpus, horovod["data"]["built_with"] if horovod["status"] == PASS else None))
        checks.append(bench_check(tf_gpus, dali_gpu, dots, bench))
    counts = {s: sum(c["status"] == s for c in checks) for s in (PASS, FAIL, SKIP)}
    return {"deeppose_fast": __version__, "host": socket.gethostname(), "python": sys.version.split()[0],
            "platform": platform.platform(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.perf_counter() - start, 1), "checks": checks, "counts": counts,
            "ok": counts[FAIL] == 0}


def format_report(report: dict) -> str:
    """The report as a readable table: one line per check (status, name, detail), then the counts."""
    width = max(len(c["name"]) for c in report["checks"])
    lines = [f"deeppose-fast {report['deeppose_fast']} doctor on {report['host']} ({report['platform']})"]
    lines += [f"  {c['status'].upper():4}  {c['name']:{width}}  {c['detail']}" for c in report["checks"]]
    n = report["counts"]
    lines.append(f"{n[PASS]} passed, {n[FAIL]} failed, {n[SKIP]} skipped in {report['seconds']} s")
    return "\n".join(lines)
