"""Backend parity: the same samples through the DALI pipeline on the CPU and on the GPU (mixed JPEG
decode, GPU warp and normalisation). Skipped where no GPU is present."""
from __future__ import annotations

import numpy as np
import pytest

from deeppose_fast.pipeline import dali
from deeppose_fast.skeleton import LSP
from deeppose_fast.specs import AugmentSpec
from deeppose_fast.testing import dots

pytestmark = pytest.mark.gpu
PERM = LSP.flip_permutation


@pytest.fixture(scope="module")
def dot_dir(tmp_path_factory):
    return dots.make_dot_dataset(tmp_path_factory.mktemp("dots"), num_train=32, num_test=13,
                                 records_per_shard=10, unannotated=0.1, seed=5)


def test_eval_parity(dot_dir):
    kw = dict(batch_size=4, input_size=227, extension=1.5, normalize=False)
    cpu = list(dali.eval_batches(dot_dir, device="cpu", **kw))
    gpu = list(dali.eval_batches(dot_dir, device="gpu", **kw))
    assert [len(b["person_index"]) for b in gpu] == [4, 4, 4, 1]
    for a, b in zip(cpu, gpu):
        np.testing.assert_array_equal(a["person_index"], b["person_index"])
        np.testing.assert_allclose(a["targets"], b["targets"], atol=1e-6)
        np.testing.assert_allclose(a["crop_box"], b["crop_box"], atol=1e-4)
        diff = np.abs(a["images"] - b["images"])  # 0-255: JPEG decoders may differ by a grey level or two
        assert diff.mean() < 1.0 and np.percentile(diff, 99) < 8, (diff.mean(), np.percentile(diff, 99))


def test_train_parity_and_dot_test_on_gpu(dot_dir):
    kw = dict(batch_size=16, seed=3, normalize=False, augment=AugmentSpec(rotation=15.0))
    cpu = next(dali.train_batches(dot_dir, device="cpu", **kw))
    gpu = next(dali.train_batches(dot_dir, device="gpu", **kw))
    # the reader and the random draws run on the CPU in both: same people, same draws
    np.testing.assert_array_equal(cpu["meta"], gpu["meta"])
    np.testing.assert_array_equal(cpu["draws"], gpu["draws"])
    np.testing.assert_allclose(cpu["targets"], gpu["targets"], atol=1e-6)
    diff = np.abs(cpu["images"] - gpu["images"])
    assert diff.mean() < 1.0, diff.mean()
    r = dots.check_dots(gpu["images"], gpu["targets"], gpu["weights"], gpu["draws"][:, 4] > 0.5, PERM)
    assert r["label_accuracy"] == 1.0 and r["mean_error_px"] < 0.5, r


def test_gpu_normalised_output_matches_cpu(dot_dir):
    kw = dict(batch_size=8, seed=1, input_size=96, layout="NCHW", dtype="float16")
    cpu = next(dali.train_batches(dot_dir, device="cpu", **kw))["images"].astype(np.float32)
    gpu = next(dali.train_batches(dot_dir, device="gpu", **kw))["images"].astype(np.float32)
    assert gpu.shape == (8, 3, 96, 96)
    assert np.abs(cpu - gpu).mean() < 0.02
