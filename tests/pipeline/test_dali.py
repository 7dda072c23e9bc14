"""The DALI pipelines on dot people (deeppose_fast.testing.dots): the dot test and its negative control,
agreement with the NumPy geometry, normalisation, evaluation mapping, sharding, per-epoch reshuffling
and clear errors on bad input."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from deeppose_fast import codec
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import dali
from deeppose_fast.pipeline.contract import PipelineError, split_info
from deeppose_fast.skeleton import LSP
from deeppose_fast.specs import AugmentSpec
from deeppose_fast.testing import dots

PERM = LSP.flip_permutation
N_TRAIN, N_TEST = 48, 21


@pytest.fixture(scope="module")
def dot_dir(tmp_path_factory):
    return dots.make_dot_dataset(tmp_path_factory.mktemp("dots"), num_train=N_TRAIN, num_test=N_TEST,
                                 records_per_shard=16, unannotated=0.1, seed=3)


@pytest.fixture(scope="module")
def jpeg_sizes(dot_dir):
    """person_index -> (H, W), decoded independently with OpenCV."""
    sizes = {}
    for split in ("train", "test"):
        for rec in shards.iter_records(dot_dir, split):
            img = cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), cv2.IMREAD_COLOR)
            sizes[int(rec.meta[6])] = img.shape[:2]
    return sizes


def _batches(dot_dir, n, **kwargs):
    it = dali.train_batches(dot_dir, batch_size=16, device="cpu", normalize=False, **kwargs)
    return [next(it) for _ in range(n)]


def _cat(batches, key):
    return np.concatenate([b[key] for b in batches])


@pytest.mark.parametrize("aug", [AugmentSpec(), AugmentSpec(rotation=25.0, scale_jitter=0.15)],
                         ids=["dtf", "rotation"])
def test_dot_test(dot_dir, aug):
    bs = _batches(dot_dir, 2, input_size=227, augment=aug)
    flipped = _cat(bs, "draws")[:, 4] > 0.5
    assert 0 < flipped.sum() < len(flipped)  # both kinds present
    r = dots.check_dots(_cat(bs, "images"), _cat(bs, "targets"), _cat(bs, "weights"), flipped, PERM)
    assert r["n"] > 300 and r["n_position"] > 0.5 * r["n"]
    assert r["label_accuracy"] == 1.0, r
    assert r["mean_error_px"] < 0.5, r


def test_dot_test_negative_control_without_the_label_swap(dot_dir):
    bs = _batches(dot_dir, 2, swap_labels=False)
    flipped = _cat(bs, "draws")[:, 4] > 0.5
    r = dots.check_dots(_cat(bs, "images"), _cat(bs, "targets"), _cat(bs, "weights"), flipped, PERM)
    assert r["label_accuracy"] < 0.9, r  # the check must fail without the swap


def test_train_geometry_matches_the_numpy_reference(dot_dir, jpeg_sizes):
    (b,) = _batches(dot_dir, 1, input_size=113, augment=AugmentSpec(ext_min=1.2, ext_max=2.0, rotation=10.0))
    for i in range(len(b["targets"])):
        hw = jpeg_sizes[int(b["meta"][i, 6])]
        g = codec.crop_geometry(b["pose"][i], hw, b["draws"][i], size=113, flip_perm=PERM)
        np.testing.assert_allclose(b["targets"][i], g.targets, atol=1e-6)
        np.testing.assert_array_equal(b["weights"][i], g.weights)
        np.testing.assert_allclose(b["crop_box"][i], g.crop_box, atol=1e-4)
    d = b["draws"]
    assert ((d[:, :2] >= 1.2) & (d[:, :2] <= 2.0)).all() and (np.abs(d[:, 5]) <= 10).all()


def test_normalisation_layout_and_dtype(dot_dir):
    it = dali.train_batches(dot_dir, batch_size=4, device="cpu", input_size=64, layout="NCHW", dtype="float16")
    images = next(it)["images"]
    assert images.shape == (4, 3, 64, 64) and images.dtype == np.float16
    x = images.astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=(2, 3)), 0, atol=2e-3)
    np.testing.assert_allclose(x.std(axis=(2, 3)), 1, atol=2e-2)  # sqrt(var / (var + 1)) ~ 1


def test_eval_every_person_once_and_mapped_back_to_source_pixels(dot_dir):
    batches = list(dali.eval_batches(dot_dir, batch_size=8, input_size=160, extension=1.0, device="cpu",
                                     normalize=False))
    assert [len(b["person_index"]) for b in batches] == [8, 8, 5]
    person = _cat(batches, "person_index")
    assert sorted(person) == list(range(N_TRAIN, N_TRAIN + N_TEST))
    records = {int(r.meta[6]): r for r in shards.iter_records(dot_dir, "test")}
    for b in batches:
        for i, p in enumerate(b["person_index"]):
            rec = records[int(p)]
            ann = rec.pose[:, 2] > 0
            expected = rec.pose[:, :2] + rec.meta[4:6]  # JPEG frame + offset = source frame
            np.testing.assert_allclose(b["joints"][i][ann], expected[ann], atol=1e-4)
            assert np.isnan(b["joints"][i][~ann]).all()
            np.testing.assert_array_equal(b["weights"][i], ann)  # extension 1: every joint inside
            decoded = codec.decode(b["targets"][i], b["crop_box"][i])
            np.testing.assert_allclose(decoded[ann], expected[ann], atol=1e-3)
            np.testing.assert_allclose(b["head_box"][i], rec.meta[:4] + np.tile(rec.meta[4:6], 2), atol=1e-4)
        r = dots.check_dots(b["images"], b["targets"], b["weights"], np.zeros(len(b["images"]), bool), PERM)
        assert r["label_accuracy"] == 1.0 and r["mean_error_px"] < 0.5, r


def test_eval_sharding_covers_every_person_once(dot_dir):
    parts = [_cat(list(dali.eval_batches(dot_dir, batch_size=4, input_size=32, shard_id=s, num_shards=3,
                                         device="cpu")), "person_index") for s in range(3)]
    allp = np.concatenate(parts)
    assert sorted(allp) == list(range(N_TRAIN, N_TRAIN + N_TEST))
    assert [len(p) for p in parts] == [7, 7, 7]


def test_eval_of_a_split_already_read_reads_no_manifest(dot_dir, monkeypatch):
    info = split_info(dot_dir, "test")
    want = list(dali.eval_batches(dot_dir, batch_size=8, input_size=32, device="cpu"))
    reads, read_text = [], Path.read_text

    def counting(path, *args, **kwargs):
        reads.append(path.name)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    got = list(dali.eval_batches(info, batch_size=8, input_size=32, device="cpu"))
    assert shards.MANIFEST not in reads
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a["person_index"], b["person_index"])
        np.testing.assert_array_equal(a["images"], b["images"])
    with pytest.raises(ValueError, match="SplitInfo given is of split 'test'"):
        next(dali.eval_batches(info, split="train", batch_size=8))


def _epoch_orders(dot_dir, epochs, **kwargs):
    it = dali.train_batches(dot_dir, batch_size=8, input_size=32, device="cpu", **kwargs)
    per_epoch = N_TRAIN // kwargs.get("num_shards", 1) // 8
    keys = [next(it)["meta"][:, 6].astype(int) for _ in range(epochs * per_epoch)]
    return [np.concatenate(keys[e * per_epoch:(e + 1) * per_epoch]) for e in range(epochs)]


def test_train_reshuffles_every_epoch(dot_dir):
    e1, e2 = _epoch_orders(dot_dir, 2, seed=5)
    assert sorted(e1) == sorted(e2) == list(range(N_TRAIN))  # each epoch sees every person once
    assert not np.array_equal(e1, e2)
    assert not np.array_equal(e1, np.arange(N_TRAIN))
    (again,) = _epoch_orders(dot_dir, 1, seed=5)
    np.testing.assert_array_equal(again, e1)  # reproducible from the seed


def test_train_shards_are_disjoint(dot_dir):
    (a,) = _epoch_orders(dot_dir, 1, shard_id=0, num_shards=2)
    (b,) = _epoch_orders(dot_dir, 1, shard_id=1, num_shards=2)
    assert len(set(a) & set(b)) == 0 and sorted(np.concatenate([a, b])) == list(range(N_TRAIN))


def test_train_dataset_is_a_tf_dataset(dot_dir):
    import tensorflow as tf

    ds = dali.train_dataset(dot_dir, batch_size=4, input_size=48, device="cpu")
    assert isinstance(ds, tf.data.Dataset)
    images, targets, weights = next(iter(ds))
    assert images.shape == (4, 48, 48, 3) and images.dtype == tf.float32
    assert targets.shape == (4, 14, 2) and weights.shape == (4, 14)
    w = weights.numpy()
    assert np.all(np.abs(targets.numpy()[w > 0]) <= 0.5)


# bad input ------------------------------------------------------------------------------------
def _copy(dot_dir, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(dot_dir, out)
    return out


def test_corrupt_jpeg_gives_a_clear_error(dot_dir, tmp_path):
    out = tmp_path / "bad"
    with shards.ShardWriter(out, "test") as w:
        for i, rec in enumerate(shards.iter_records(dot_dir, "test")):
            jpeg = rec.jpeg if i != 3 else rec.jpeg[:2] + bytes(200)  # JPEG magic, garbage after it
            w.write(rec.key, jpeg, rec.pose, rec.meta)
    shards.Manifest.read(dot_dir).replace(splits={"test": w.summary()}).write(out)
    bad = f"record {N_TRAIN + 3:08d} in test-00000.tar: its JPEG does not decode"
    with pytest.raises(PipelineError, match=f"{out}: reading split 'test' failed: {bad}"):
        list(dali.eval_batches(out, batch_size=8, input_size=32, device="cpu"))


def test_missing_shard_gives_a_clear_error(dot_dir, tmp_path):
    out = _copy(dot_dir, tmp_path)
    (out / "train-00001.tar").unlink()
    with pytest.raises(PipelineError, match="train-00001.tar.*missing"):
        dali.train_batches(out, batch_size=4).__next__()


def test_empty_split_and_unknown_split_give_clear_errors(dot_dir, tmp_path):
    out = _copy(dot_dir, tmp_path)
    m = shards.Manifest.read(out)
    m.replace(splits={**m.splits, "test": {"count": 0, "shards": []}}).write(out)
    with pytest.raises(PipelineError, match="'test' is empty"):
        next(dali.eval_batches(out, batch_size=4))
    with pytest.raises(PipelineError, match="no split 'val'"):
        next(dali.eval_batches(out, split="val", batch_size=4))
    with pytest.raises(PipelineError, match="not prepared"):
        next(dali.eval_batches(tmp_path / "nowhere", batch_size=4))


def test_truncated_shard_gives_a_clear_error(dot_dir, tmp_path):
    out = _copy(dot_dir, tmp_path)
    tar = out / "test-00000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 3])
    with pytest.raises(PipelineError, match=str(out)):
        list(dali.eval_batches(out, batch_size=4, input_size=32, device="cpu"))


_RSS_SCRIPT = """
import resource, sys
from deeppose_fast.pipeline import dali
it = dali.train_batches(sys.argv[1], batch_size=32, device="cpu")
rss = []
for i in range(60):
    next(it)
    if i in (14, 59):
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(rss[0], rss[1])
"""


def test_training_streams_without_growing_memory(tmp_path):
    """Memory: 60 batches of 32 (8 epochs of 240 people, 640 x 480 JPEGs) in a fresh process; the peak RSS
    stays far below 1.5 GB and stops growing once the pipeline is warm (no image cache)."""
    import subprocess
    import sys

    data = dots.make_dot_dataset(tmp_path / "big", num_train=240, height=(440, 520), width=(600, 680),
                                 records_per_shard=60, seed=9)
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(data)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    warm, end = map(float, out.stdout.split()[-2:])
    assert end < 1500, (warm, end)
    assert end - warm < 64, (warm, end)  # MiB


def test_corrupt_jpeg_in_the_tf_dataset_raises_instead_of_hanging(dot_dir, tmp_path):
    import tensorflow as tf

    out = tmp_path / "bad"
    with shards.ShardWriter(out, "train") as w:
        for i, rec in enumerate(shards.iter_records(dot_dir, "train")):
            w.write(rec.key, rec.jpeg if i != 5 else rec.jpeg[:2] + bytes(100), rec.pose, rec.meta)
    shards.Manifest.read(dot_dir).replace(splits={"train": w.summary()}).write(out)
    ds = dali.train_dataset(out, batch_size=16, input_size=32, device="cpu")
    with pytest.raises(tf.errors.OpError, match="peek_image_shape"):
        for _ in ds.take(N_TRAIN // 16 + 1):
            pass


@pytest.mark.parametrize("scale_range", [None, (0.4, 1.0)], ids=["full-resolution", "scaled"])
def test_whole_decode_gives_the_crops_of_region_decode(tmp_path, scale_range):
    """``decode="whole"`` (the GPU path's choice, here on CPU operators) decodes the stored region whole and
    warps it with the whole-JPEG matrix: the same crops as decoding only the crop's region (libjpeg-turbo
    decodes a region with the same IDCT; pixels at the region's edge may differ by the chroma
    upsampling's neighbours), the same targets, weights and boxes bit for bit."""
    data = dots.make_dot_dataset(tmp_path / "dots", num_train=12, records_per_shard=6, seed=4,
                                 scale_range=scale_range)
    kwargs = dict(batch_size=12, input_size=96, device="cpu", augment=AugmentSpec(rotation=20.0, scale_jitter=0.1),
                  shuffle_buffer=1, normalize=False)
    region = next(dali.train_batches(data, decode="region", **kwargs))
    whole = next(dali.train_batches(data, decode="whole", **kwargs))
    for key in ("targets", "weights", "crop_box", "meta", "draws"):
        np.testing.assert_array_equal(whole[key], region[key], err_msg=key)
    diff = np.abs(whole["images"] - region["images"])
    assert diff.mean() < 0.5 and np.percentile(diff, 99) < 4.0, (diff.mean(), np.percentile(diff, 99))
    r = dots.check_dots(whole["images"], whole["targets"], whole["weights"], whole["draws"][:, 4] > 0.5, PERM)
    assert r["label_accuracy"] == 1.0 and r["mean_error_px"] < 0.5, r


def test_decode_choice():
    assert dali.resolve_decode("auto", "cpu") == dali.CPU_DECODE
    assert dali.resolve_decode("auto", "gpu") == "whole"
    with pytest.raises(ValueError, match="nvImageCodec#55"):
        dali.resolve_decode("region", "gpu")
    with pytest.raises(ValueError, match="decode must be"):
        dali.resolve_decode("slice", "cpu")


def test_decode_cache_size(dot_dir):
    """1 GiB decoded needs 1075.2 -> 1076 MB + 16 of bookkeeping; under a 0.5 GB budget the cache takes the
    budget and says that not everything fits; on a CPU host there is no cache."""
    assert dali.cache_size(2 ** 30, 8.0) == (1092, True)
    assert dali.cache_size(2 ** 30, 0.5) == (512, False)
    assert dali.decode_cache_plan(dot_dir, shards.Manifest.read(dot_dir), "train", 8.0, device="cpu") == (0, None)
