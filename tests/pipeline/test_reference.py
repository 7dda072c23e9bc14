"""The OpenCV + NumPy reference loader: the dot test on its own, and pixel parity with the DALI CPU
pipeline on the same samples and the same random draws; on records at full resolution and on records
that declare a scale (regions stored at reduced resolution: the geometry runs in the source frame)."""
from __future__ import annotations

import numpy as np
import pytest

from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import dali, reference
from deeppose_fast.skeleton import LSP
from deeppose_fast.specs import AugmentSpec
from deeppose_fast.testing import dots

PERM = LSP.flip_permutation


@pytest.fixture(scope="module", params=[None, (0.4, 1.0)], ids=["full-resolution", "scaled"])
def dot_dir(tmp_path_factory, request):
    return dots.make_dot_dataset(tmp_path_factory.mktemp("dots"), num_train=24, num_test=10,
                                 records_per_shard=10, unannotated=0.1, seed=11, scale_range=request.param)


def test_opencv_matrix_moves_pixel_centres():
    # identity in the continuous frame is identity in OpenCV's; a 2x scale maps centre 0 (0.5) to 0.5 (1.0)
    np.testing.assert_allclose(reference.opencv_matrix(np.eye(2, 3)), np.eye(2, 3))
    m = reference.opencv_matrix(np.array([[2.0, 0, 0], [0, 2.0, 0]]))
    np.testing.assert_allclose(m @ [0, 0, 1], [0.5, 0.5])


def test_reference_passes_the_dot_test(dot_dir):
    b = next(reference.train_batches(dot_dir, batch_size=24, normalize_image=False,
                                     augment=AugmentSpec(rotation=20.0)))
    r = dots.check_dots(b["images"], b["targets"], b["weights"], b["draws"][:, 4] > 0.5, PERM)
    assert r["label_accuracy"] == 1.0 and r["mean_error_px"] < 0.5, r


def test_reference_normalises_per_image_and_channel(dot_dir):
    b = next(reference.train_batches(dot_dir, batch_size=4, input_size=64, layout="NCHW"))
    x = b["images"].astype(np.float64)
    assert x.shape == (4, 3, 64, 64)
    np.testing.assert_allclose(x.mean(axis=(2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(2, 3)), 1, atol=2e-2)


def test_train_crops_match_dali_on_the_same_draws(dot_dir):
    records = {int(r.meta[6]): r for r in shards.iter_records(dot_dir, "train")}
    b = next(dali.train_batches(dot_dir, batch_size=12, device="cpu",
                                augment=AugmentSpec(rotation=15.0, scale_jitter=0.1)))
    for i in range(12):
        rec = records[int(b["meta"][i, 6])]
        image, g = reference.crop_sample(rec.jpeg, rec.pose, b["draws"][i], size=227, flip_perm=PERM,
                                         scale=rec.meta[shards.META_SCALE])
        np.testing.assert_allclose(g.targets, b["targets"][i], atol=1e-6)
        # normalised units: 0.05 is about 2 grey levels of a typical crop
        diff = np.abs(image - b["images"][i])
        assert diff.mean() < 0.01 and diff.max() < 0.1, (diff.mean(), diff.max())


def test_eval_matches_dali(dot_dir):
    ours = list(reference.eval_batches(dot_dir, batch_size=4, input_size=96, extension=1.5))
    theirs = list(dali.eval_batches(dot_dir, batch_size=4, input_size=96, extension=1.5, device="cpu"))
    assert [len(b["person_index"]) for b in ours] == [len(b["person_index"]) for b in theirs] == [4, 4, 2]
    for a, b in zip(ours, theirs):
        for key in ("targets", "weights", "crop_box", "head_box", "person_index"):
            np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)
        np.testing.assert_array_equal(np.isnan(a["joints"]), np.isnan(b["joints"]))
        assert np.abs(a["images"] - b["images"]).mean() < 0.01
