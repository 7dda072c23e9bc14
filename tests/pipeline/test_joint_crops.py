"""The cascade's joint-crop pipeline: the records it reads, its crops against the OpenCV reference on the
same draws, the dot test, and the training stream's epoch, weights, determinism and ranks."""
from __future__ import annotations

import numpy as np
import pytest

from deeppose_fast.cascade import statistics
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import joint_crops, reference
from deeppose_fast.pipeline.contract import split_info
from deeppose_fast.skeleton import LSP
from deeppose_fast.testing import dots

PERM = LSP.flip_permutation
K = LSP.num_joints


@pytest.fixture(scope="module", params=[None, (0.4, 1.0)], ids=["full-resolution", "scaled"])
def dot_dir(tmp_path_factory, request):
    return dots.make_dot_dataset(tmp_path_factory.mktemp("dots"), num_train=24, num_test=6,
                                 records_per_shard=10, unannotated=0.1, seed=5, scale_range=request.param)


@pytest.fixture(scope="module")
def table(dot_dir):
    return joint_crops.RecordTable(split_info(dot_dir, "train"))


def _stats(var=0.01):
    return statistics.DisplacementStats.isotropic("lsp", var, count=10)


def test_the_table_holds_the_records_in_shard_order(dot_dir, table):
    records = list(shards.iter_records(dot_dir, "train"))
    assert table.count == len(records) == 24
    np.testing.assert_array_equal(table.pose, np.stack([r.pose for r in records]))
    np.testing.assert_array_equal(table.meta, np.stack([r.meta for r in records]))
    assert [j.tobytes() for j in table.jpegs([3, 0, 17])] == [records[i].jpeg for i in (3, 0, 17)]
    # the source frame: the shard's JPEG-frame joints divided by the scale, NaN where not annotated
    r = records[5]
    want = np.where(r.pose[:, 2:3] > 0.5, r.pose[:, :2] / r.meta[shards.META_SCALE], np.nan)
    np.testing.assert_allclose(table.joints()[5], want, rtol=1e-6)


def test_crops_match_the_opencv_reference_on_the_same_draws(table):
    rng = np.random.default_rng(0)
    gt = table.joints()
    rows = rng.integers(0, table.count, 16)
    joints = np.array([rng.choice(np.flatnonzero(np.isfinite(gt[r, :, 0]))) for r in rows])
    centres = gt[rows, joints] + rng.normal(0, 15, (16, 2))
    centres[0] = [-40.0, -30.0]  # a crop reaching far outside the image: the border is repeated
    draws = np.column_stack([centres, rng.uniform(20, 90, 16), rng.random(16) < 0.5, joints]).astype(np.float32)
    got = [b for b in joint_crops.crop_batches(table, rows, draws, batch_size=6, input_size=64, device="cpu")]
    assert [len(b["images"]) for b in got] == [6, 6, 4]
    batch = {k: np.concatenate([b[k] for b in got]) for k in joint_crops.OUTPUTS}
    for i, r in enumerate(rows):
        image, g = reference.joint_crop_sample(table.jpegs([r])[0].tobytes(), table.pose[r], draws[i], size=64,
                                               flip_perm=PERM, scale=table.meta[r, shards.META_SCALE])
        np.testing.assert_allclose(batch["targets"][i], g.targets, atol=1e-5)
        np.testing.assert_array_equal(batch["weights"][i], g.weights)
        np.testing.assert_allclose(batch["crop_box"][i], g.crop_box, rtol=1e-6)
        diff = np.abs(image - batch["images"][i])
        assert diff.mean() < 0.01 and diff.max() < 0.1, (i, diff.mean(), diff.max())
        # one weight, on the label of the refined joint (after the swap on a flipped crop)
        label = PERM[joints[i]] if draws[i, 3] > 0.5 else joints[i]
        assert batch["weights"][i].sum() <= 1 and (batch["weights"][i].sum() == 0 or batch["weights"][i][label] == 1)


def test_training_crops_pass_the_dot_test(dot_dir, table):
    stream = joint_crops.stage_train_batches(None, _stats(var=0.002), sigma=0.6, batch_size=24, input_size=96,
                                             table=table, normalize=False, extras=True, device="cpu")
    images, targets, weights, crop_box, draws, _ = next(stream)
    assert weights.sum() > 12  # most refined joints lie inside their crops
    r = dots.check_dots(images, targets, weights, draws[:, 3] > 0.5, PERM)
    assert r["label_accuracy"] == 1.0 and r["mean_error_px"] < 0.6, r


def test_a_crop_about_the_true_joint_has_its_target_at_the_centre(table):
    # displacements of (almost) zero: the crop is centred on the truth, whose target is then (0, 0)
    stream = joint_crops.stage_train_batches(None, _stats(var=1e-12), sigma=1.0, batch_size=32, input_size=64,
                                             table=table, extras=True, device="cpu")
    _, targets, weights, crop_box, draws, rows = next(stream)
    on = weights > 0
    assert on.sum(axis=1).tolist() == [1] * 32  # every crop: its own joint, inside, and only it
    np.testing.assert_allclose(targets[on], 0.0, atol=1e-4)
    # the side is sigma times the torso diameter of the (simulated = true) pose
    np.testing.assert_allclose(draws[:, 2], LSP.torso_diameter(table.joints()[rows]), rtol=1e-4)


def _stream(table, batch_size, **kwargs):
    return joint_crops.stage_train_batches(None, _stats(), sigma=1.0, batch_size=batch_size, input_size=32,
                                           table=table, extras=True, device="cpu", **kwargs)


def test_an_epoch_is_every_training_item_once(table):
    rows, joints = joint_crops.training_items(table.joints(), LSP)
    m, batch = len(rows), 8
    stream = _stream(table, batch)
    got = [next(stream) for _ in range(m // batch + 2)]  # epoch 1 and the start of epoch 2
    seen = np.concatenate([np.column_stack([g[5], g[4][:, 4].astype(int)]) for g in got])
    epoch = {tuple(p) for p in seen[:m].tolist()}
    assert len(epoch) == m and epoch == set(zip(rows.tolist(), joints.tolist()))
    # joints not annotated, and people without a torso diagonal, are not trained on
    gt = table.joints()
    assert np.isfinite(gt[seen[:, 0], seen[:, 1]]).all()


def test_the_stream_is_a_function_of_the_seed_and_ranks_read_their_part(table):
    a = [g[4] for s in [_stream(table, 8, seed=3)] for g in (next(s), next(s))]
    b = [g[4] for s in [_stream(table, 8, seed=3)] for g in (next(s), next(s))]
    c = next(_stream(table, 8, seed=4))[4]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    assert not np.array_equal(a[0], c)
    for rank in (0, 1):  # contract.shard_range's split, as DALI's readers make it for stage 1
        stream = _stream(table, 16, seed=1, shard_id=rank, num_shards=2)
        rows = np.concatenate([next(stream)[5] for _ in range(4)])
        assert set(rows.tolist()) == set(range(rank * 12, (rank + 1) * 12))


def test_bad_settings_are_refused(table):
    with pytest.raises(ValueError, match="sigma"):
        next(joint_crops.stage_train_batches(None, _stats(), sigma=0.0, batch_size=4, table=table))
    with pytest.raises(ValueError, match="draws"):
        next(joint_crops.crop_batches(table, np.zeros(3, int), np.zeros((3, 4)), batch_size=2))


def test_all_weights_are_the_union_of_every_joint_s_own_weight(table):
    # "all": a crop's label k carries weight where the reference rule would weight it had joint k's own
    # crop been cut with this square: the union over the joints of codec.joint_crop_geometry's weights
    from deeppose_fast import codec

    stream = joint_crops.stage_train_batches(None, _stats(var=0.05), sigma=1.5, batch_size=24, input_size=48,
                                             table=table, extras=True, device="cpu", joint_weights="all")
    _, _, weights, crop_box, draws, rows = next(stream)
    assert (weights.sum(axis=1) > 1).any()  # crops holding several joints
    for i, r in enumerate(rows):
        union = np.zeros(K, np.float32)
        for k in range(K):
            g = codec.joint_crop_geometry(table.pose[r], (4000, 4000), draws[i, :2], draws[i, 2], k, size=48,
                                          flip=bool(draws[i, 3] > 0.5), flip_perm=PERM,
                                          scale=table.meta[r, shards.META_SCALE])
            union = np.maximum(union, g.weights)
        np.testing.assert_array_equal(weights[i], union, err_msg=str(i))


def test_a_joint_conditioned_stream_names_the_label_its_own_weight_is_on(table):
    # the network is told the label that carries the crop's weight: the drawn joint, or on a flipped crop
    # the label that joint plays (LSP's permutation swaps left and right: not the identity)
    stream = joint_crops.stage_train_batches(None, _stats(), sigma=1.0, batch_size=24, input_size=48, table=table,
                                             extras=True, device="cpu", joint_input=True)
    (images, labels), _, weights, _, draws, _ = next(stream)
    flipped = draws[:, 3] > 0.5
    assert labels.dtype == np.int32 and images.shape[0] == 24 and flipped.any() and (~flipped).any()
    own = weights.sum(axis=1) == 1  # the refined joint inside its crop (nearly always)
    assert own.mean() > 0.5 and (weights.sum(axis=1) <= 1).all()
    np.testing.assert_array_equal(labels[own], weights[own].argmax(axis=1))
    np.testing.assert_array_equal(labels[~flipped], draws[~flipped, 4].astype(int))
    moved = flipped & (np.asarray(PERM)[draws[:, 4].astype(int)] != draws[:, 4].astype(int))
    assert moved.any() and (labels[moved] != draws[moved, 4]).all()
    with pytest.raises(ValueError, match="joint_weights must be 'own'"):
        next(joint_crops.stage_train_batches(None, _stats(), sigma=1.0, batch_size=4, table=table,
                                             joint_input=True, joint_weights="all"))
