"""Finds and loads the native DALI operators (csrc/pose_crop) once per process: ``PoseCrop``
(``fn.pose_crop``) and the cascade's ``JointCrop`` (``fn.joint_crop``), one library.

The library is ``deeppose_fast/_native/pose_crop.<ext-suffix>.so``, put there by the package's build
(``setup.py`` runs CMake). It embeds a hash of its sources; when the sources beside the package (an editable
install or a checkout) hash differently, the build is stale and loading stops with the command to rebuild.
"""
from __future__ import annotations

import hashlib
import re
import sysconfig
import threading
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
NATIVE_DIR = PACKAGE_DIR / "_native"
SOURCE_ROOT = PACKAGE_DIR.parent  # the repository root in a checkout / editable install
# every operator source, in the order CMakeLists.txt hashes them (POSE_CROP_SOURCES)
SOURCES = ("csrc/pose_crop/pose_crop.h", "csrc/pose_crop/pose_crop.cc",
           "csrc/pose_crop/joint_crop.h", "csrc/pose_crop/joint_crop.cc")
BUILD_HINT = ("build it with `pip install --no-build-isolation --no-deps -e .` in the repository root "
              "(or `bash scripts/setup.sh`)")
OPERATOR = "PoseCrop"  # exposed as nvidia.dali.fn.pose_crop

_TAG = re.compile(rb"deeppose_fast\.pose_crop\.source_hash=([0-9a-f]{64})")
_lock = threading.Lock()
_loaded: Path | None = None


class NativeBuildError(RuntimeError):
    """The native operator is missing, stale or does not load; the message says how to build it."""


def library_path() -> Path:
    """The operator library for this interpreter (``pose_crop.<EXT_SUFFIX>``), existing or not."""
    return NATIVE_DIR / f"pose_crop{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def source_hash(root: Path = SOURCE_ROOT) -> str | None:
    """The hash CMakeLists.txt embeds: sha256 of the concatenated per-file sha256 hex digests;
    None when the sources are not beside the package (an installed wheel)."""
    digests = []
    for rel in SOURCES:
        path = root / rel
        if not path.is_file():
            return None
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def built_hash(path: Path) -> str:
    """The source hash compiled into a built library, read from its bytes (the library is not run)."""
    match = _TAG.search(Path(path).read_bytes())
    if match is None:
        raise NativeBuildError(f"{path} carries no PoseCrop source hash: not this project's operator "
                               f"library, or built without CMakeLists.txt; {BUILD_HINT}")
    return match.group(1).decode()


def check_build(path: Path | None = None, source_root: Path | None = None) -> Path:
    """The library path if it exists and matches the sources under ``source_root`` (default: the
    checkout holding the package); NativeBuildError otherwise."""
    path = library_path() if path is None else Path(path)
    if not path.is_file():
        raise NativeBuildError(f"the native DALI operator {path} is missing; {BUILD_HINT}")
    want = source_hash(SOURCE_ROOT if source_root is None else Path(source_root))
    if want is not None:
        have = built_hash(path)
        if have != want:
            raise NativeBuildError(f"the native DALI operator {path} is stale (built from sources {have[:12]}, "
                                   f"csrc/ is now {want[:12]}); {BUILD_HINT}")
    return path


def load() -> Path:
    """Load the operators into DALI once (thread-safe); afterwards ``nvidia.dali.fn.pose_crop`` and
    ``fn.joint_crop`` exist.
    Returns the library path."""
    global _loaded
    with _lock:
        if _loaded is None:
            path = check_build()
            from nvidia.dali import plugin_manager
            try:
                plugin_manager.load_library(str(path))
            except RuntimeError as e:
                raise NativeBuildError(f"DALI could not load {path}: {e}; {BUILD_HINT}") from None
            _loaded = path
        return _loaded
