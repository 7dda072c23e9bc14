"""The five real MPII photos (shared/fixtures/mpii-sample): packed the way `prepare` packs people (a
pre-cropped JPEG plus its offset), every annotated joint lies inside the evaluation crop at extensions
>= 1 and maps back to its original pixel; DALI's crops of real photos match the OpenCV reference."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from deeppose_fast import codec
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import dali, reference
from deeppose_fast.skeleton import MPII


@pytest.fixture(scope="module")
def mpii_shards(mpii_sample_dir, tmp_path_factory):
    """Shards of the 5 people; returns (folder, {person_index: (K, 2) source joints, NaN if absent})."""
    people = json.loads((mpii_sample_dir / "test_mpii.json").read_text())
    out = tmp_path_factory.mktemp("mpii")
    truth = {}
    with shards.ShardWriter(out, "test") as writer:
        for i, person in enumerate(people):
            image = cv2.imread(str(mpii_sample_dir / person["image"]), cv2.IMREAD_COLOR)
            assert image is not None, person["image"]
            # mmpose's file holds 0-based pixel indices: the continuous frame adds half a pixel
            xy = np.asarray(person["joints"], np.float64) + 0.5
            ann = np.asarray(person["joints_vis"]) > 0
            truth[i] = np.where(ann[:, None], xy, np.nan)
            # pre-crop like prepare: the joints' box grown 1.3x on each side, clipped to the photo
            lo, hi = xy[ann].min(0), xy[ann].max(0)
            pad = 1.3 * (hi - lo)
            x0, y0 = np.maximum(np.floor(lo - pad), 0).astype(int)
            x1, y1 = np.minimum(np.ceil(hi + pad), [image.shape[1], image.shape[0]]).astype(int)
            ok, jpeg = cv2.imencode(".jpg", image[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            pose = np.zeros((16, 4), np.float32)
            pose[ann, :2] = xy[ann] - [x0, y0]
            pose[ann, 2:] = 1
            meta = np.array([np.nan] * 4 + [x0, y0, i, i, 1, 1], np.float32)  # full resolution
            writer.write(i, jpeg.tobytes(), pose, meta)
    shards.Manifest(name="mpii-sample", splits={"test": writer.summary()}, skeleton="mpii",
                    joint_names=tuple(MPII.joint_names), flip_pairs=tuple(MPII.flip_pairs), num_joints=16,
                    precrop={"rule": "test fixture: 1.3x box on each side"},
                    created_by="tests/pipeline/test_mpii_sample.py").write(out)
    return out, truth


@pytest.mark.parametrize("extension", [1.0, 1.2, 1.5, 2.0])
def test_every_joint_inside_the_eval_crop_and_mapped_back(mpii_shards, extension):
    folder, truth = mpii_shards
    (batch,) = list(dali.eval_batches(folder, batch_size=8, input_size=227, extension=extension, device="cpu"))
    assert sorted(batch["person_index"]) == list(range(5))
    for i, p in enumerate(batch["person_index"]):
        want = truth[int(p)]
        ann = np.isfinite(want[:, 0])
        np.testing.assert_array_equal(batch["weights"][i] > 0, ann)
        np.testing.assert_allclose(batch["joints"][i][ann], want[ann], atol=1e-3)
        x0, y0, w, h = batch["crop_box"][i]
        tol = 1e-3  # at extension 1 the extreme joints lie on the box edge (float32 crop box)
        assert np.all((want[ann] >= [x0 - tol, y0 - tol]) & (want[ann] <= [x0 + w + tol, y0 + h + tol]))
        err = np.hypot(*(codec.decode(batch["targets"][i], batch["crop_box"][i])[ann] - want[ann]).T)
        assert err.max() < 0.5, err


def test_real_photo_crops_match_the_opencv_reference(mpii_shards):
    folder, _ = mpii_shards
    (ours,) = list(dali.eval_batches(folder, batch_size=8, input_size=227, extension=1.5, device="cpu"))
    (ref,) = list(reference.eval_batches(folder, batch_size=8, input_size=227, extension=1.5))
    diff = np.abs(ours["images"] - ref["images"])
    assert diff.mean() < 0.01, diff.mean()
    np.testing.assert_allclose(ours["targets"], ref["targets"], atol=1e-6)
