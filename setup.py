"""Build script: the Python package plus the native DALI operator in csrc/, built by CMake.

``pip install --no-build-isolation -e .`` (what scripts/setup.sh runs) configures CMakeLists.txt against the
DALI installed in the same environment and puts the operator library inside ``deeppose_fast/_native/``.
Set ``DEEPPOSE_FAST_SKIP_NATIVE=1`` to install the Python code alone (the operator is then reported missing
at run time with the command that builds it).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SKIP_NATIVE = os.environ.get("DEEPPOSE_FAST_SKIP_NATIVE") == "1"


class CMakeExtension(Extension):
    """An extension whose only job is to name the library CMake builds (target ``name`` in CMakeLists)."""

    def __init__(self, name: str, target: str):
        super().__init__(name, sources=[])
        self.target = target


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        build_dir = ROOT / "build" / "native"
        build_dir.mkdir(parents=True, exist_ok=True)
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        cmake = shutil.which("cmake") or "cmake"
        subprocess.check_call([cmake, "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                               f"-DPython_EXECUTABLE={sys.executable}"])
        subprocess.check_call([cmake, "--build", str(build_dir), "--target", ext.target, "-j",
                               str(os.cpu_count() or 2)])
        built = build_dir / f"lib{ext.target}.so"
        _replace_atomically(built, out)
        # Editable installs import from the source tree: keep a copy where the loader looks.
        inplace = ROOT / "deeppose_fast" / "_native" / out.name
        if inplace != out:
            inplace.parent.mkdir(parents=True, exist_ok=True)
            _replace_atomically(built, inplace)


def _replace_atomically(src: Path, dst: Path) -> None:
    """Copy to a temporary name, then rename: a process that has the old library mapped keeps its
    (now unlinked) copy instead of crashing on a file rewritten under it."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _version() -> str:
    for line in (ROOT / "deeppose_fast" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in deeppose_fast/__init__.py")


setup(
    name="deeppose-fast",
    version=_version(),
    description="DeepPose stage 1 (AlexNet joint regression) with TF2, DALI, Numba metrics and Horovod",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["deeppose_fast", "deeppose_fast.*"]),
    install_requires=["numpy", "scipy", "numba", "opencv-python-headless", "click>=8.1", "tqdm", "matplotlib>=3.8"],
    ext_modules=[] if SKIP_NATIVE else [CMakeExtension("deeppose_fast._native.pose_crop", target="pose_crop")],
    cmdclass={"build_ext": CMakeBuild},
    entry_points={"console_scripts": ["deeppose-fast=deeppose_fast.cli:main"]},
    zip_safe=False,
)
