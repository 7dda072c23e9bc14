"""The loaders' shared contract (deeppose_fast.pipeline.contract): the one normalisation in its NumPy and
TensorFlow forms against an independent formula, the training draws under an AugmentSpec, the input
device, and that the OpenCV loader and the contract load no DALI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from deeppose_fast import codec
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import contract
from deeppose_fast.skeleton import LSP
from deeppose_fast.specs import AugmentSpec
from deeppose_fast.testing import dots


def _independent(x: np.ndarray) -> np.ndarray:
    """Per image and channel, population variance, epsilon 1 (pixel units^2), in float64."""
    x = x.astype(np.float64)
    return (x - x.mean((-3, -2), keepdims=True)) / np.sqrt(x.var((-3, -2), keepdims=True) + 1.0)


def test_normalisation_numpy_and_tensorflow_agree_with_the_formula():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 29, 31, 3)).astype(np.uint8)
    images[1, :, :, 2] = 7  # a flat channel: epsilon keeps it finite (and zero)
    images[2] = images[2] // 8  # a dim image: epsilon matters
    want = _independent(images)
    for i in range(len(images)):
        got = contract.normalize(images[i])
        assert got.dtype == np.float32 and got.shape == images[i].shape
        np.testing.assert_allclose(got, want[i], atol=2e-5)
    got = contract.normalize_tf(tf.constant(images)).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_array_equal(got[1, :, :, 2], 0)


def test_train_draws_follow_the_spec():
    rng = np.random.default_rng(1)
    d = codec.sample_draws(rng, 500, AugmentSpec(ext_min=1.1, ext_max=1.3, shift=0.0, flip=False,
                                                   rotation=12.0, scale_jitter=0.2))
    assert d.shape == (500, 7) and d.dtype == np.float32
    assert ((d[:, :2] >= 1.1) & (d[:, :2] <= 1.3)).all()
    assert (d[:, 2:5] == 0).all()  # no shift, no flip
    assert (np.abs(d[:, 5]) <= 12).all() and np.abs(d[:, 5]).max() > 6
    assert ((d[:, 6] >= 0.8) & (d[:, 6] <= 1.2)).all()
    d = codec.sample_draws(rng, 500, AugmentSpec())
    assert 0.3 < d[:, 4].mean() < 0.7 and (d[:, 5] == 0).all() and (d[:, 6] == 1).all()
    assert np.abs(d[:, 2:4]).max() > 0.5


def test_split_info_reads_the_manifest_once(tmp_path, monkeypatch):
    data = dots.make_dot_dataset(tmp_path / "dots", num_train=5, num_test=3, records_per_shard=2, seed=1)
    reads, read_text = [], Path.read_text

    def counting(path, *args, **kwargs):
        reads.append(path.name)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    info = contract.split_info(data, "train")
    assert reads.count(shards.MANIFEST) == 1
    assert (info.split, info.count, info.num_joints, info.flip_perm) == ("train", 5, 14, LSP.flip_permutation)
    assert len(info.tars) == len(info.indices) == 3
    assert contract.as_split(info, None, "test") is info and contract.as_split(info, "train", "test") is info


def test_device_resolution():
    expected = "gpu" if contract.gpu_available() else "cpu"
    assert contract.resolve_device("auto") == expected
    assert contract.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        contract.resolve_device("tpu")
    if not contract.gpu_available():
        with pytest.raises(contract.PipelineError, match="no CUDA device"):
            contract.resolve_device("gpu")


@pytest.mark.parametrize("module", ["deeppose_fast.pipeline.contract", "deeppose_fast.pipeline.reference"])
def test_loads_no_dali(module):
    code = (f"import sys, {module}\n"
            "heavy = [m for m in ('nvidia.dali', 'deeppose_fast.pipeline.dali', 'tensorflow') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
