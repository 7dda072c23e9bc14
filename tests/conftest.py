"""Shared fixtures and the GPU skip. Tests make their own data (synthetic data sets written in the real
on-disk formats) or use the real MPII sample in ../shared/fixtures/mpii-sample."""
from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def gpu_available() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi found none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mpii_sample_dir() -> Path:
    """The five real MPII photos with their joints (shared/fixtures/mpii-sample)."""
    path = Path(os.environ.get("DEEPPOSE_FAST_FIXTURES", FIXTURES)) / "mpii-sample"
    if not path.is_dir():
        pytest.skip(f"fixture folder {path} not found")
    return path


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory) -> Path:
    """A small synthetic data set (24 generated images, MPII format) prepared once per test session by
    ``prepare`` with its defaults. Shared: a test that damages or extends it works on a copy."""
    from deeppose_fast.datasets import DatasetWarning
    from deeppose_fast.datasets.prepare import prepare

    out = tmp_path_factory.mktemp("synthetic-shards")
    with warnings.catch_warnings():  # the generator's people without joints are skipped, with a warning
        warnings.simplefilter("ignore", DatasetWarning)
        prepare("synthetic", out, num_images=24, workers=1, progress=False)
    return out
