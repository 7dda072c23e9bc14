"""Damaged shards give one line naming the shard (and, for a JPEG that does not decode, the record) and
the command that rebuilds the data set, on every path that reads them: DALI's eval and train iterators,
and the tf.data dataset the train loop iterates (``show``: tests/commands/test_show_cli.py)."""
from __future__ import annotations

import shutil

import pytest

from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import dali, failures
from deeppose_fast.pipeline.contract import PipelineError
from deeppose_fast.testing import dots

N_TRAIN, N_TEST, PER_SHARD = 24, 12, 8
BAD = 5  # the damaged record's position in the split


@pytest.fixture(scope="module")
def dot_dir(tmp_path_factory):
    return dots.make_dot_dataset(tmp_path_factory.mktemp("dots"), num_train=N_TRAIN, num_test=N_TEST,
                                 records_per_shard=PER_SHARD, seed=4)


def copy_of(dot_dir, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(dot_dir, out)
    return out


def truncate(tar):
    """Cut a shard in half, as an interrupted copy would."""
    with open(tar, "r+b") as f:
        f.truncate(tar.stat().st_size // 2)


def stray_bytes(jpeg: bytes) -> bytes:
    """The JPEG with 4 stray bytes after its first segment: libjpeg (OpenCV) skips them with a warning,
    nvImageCodec (DALI's decoders) refuses the file."""
    end = 4 + int.from_bytes(jpeg[4:6], "big")  # SOI (2) + marker (2) + the APP0 segment's length
    return jpeg[:end] + b"\0" * 4 + jpeg[end:]


def with_bad_jpeg(dot_dir, tmp_path, split):
    """A copy of ``split`` whose record number ``BAD`` has a JPEG DALI cannot decode. Returns the folder
    and the record's key."""
    out = tmp_path / "bad"
    records = list(shards.iter_records(dot_dir, split))
    with shards.ShardWriter(out, split, records_per_shard=PER_SHARD) as w:
        for i, rec in enumerate(records):
            w.write(rec.key, stray_bytes(rec.jpeg) if i == BAD else rec.jpeg, rec.pose, rec.meta)
    shards.Manifest.read(dot_dir).replace(splits={split: w.summary()}).write(out)
    return out, records[BAD].key


def assert_one_line(message, *parts):
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


def test_stray_bytes_fool_opencv_but_not_dali(dot_dir):
    """The premise of the corrupt-JPEG tests: OpenCV decodes the damaged JPEG, DALI does not."""
    import cv2
    import numpy as np

    rec = next(shards.iter_records(dot_dir, "test"))
    assert cv2.imdecode(np.frombuffer(stray_bytes(rec.jpeg), np.uint8), cv2.IMREAD_COLOR) is not None
    assert failures.undecodable([rec.jpeg, stray_bytes(rec.jpeg)]) == [False, True]


@pytest.mark.parametrize("split", ["train", "test"])
def test_truncated_shard_is_named_before_dali_starts(dot_dir, tmp_path, split):
    out = copy_of(dot_dir, tmp_path)
    truncate(out / f"{split}-00001.tar")
    with pytest.raises(PipelineError) as e:
        if split == "train":
            next(dali.train_batches(out, batch_size=4, input_size=32, device="cpu"))
        else:
            next(dali.eval_batches(out, batch_size=4, input_size=32, device="cpu"))
    assert_one_line(str(e.value), f"{out / f'{split}-00001.tar'}: truncated or corrupt",
                    f"re-run `deeppose-fast prepare dots --out {out.resolve()} --records-per-shard {PER_SHARD}`")


def test_truncated_shard_in_the_tf_dataset(dot_dir, tmp_path):
    out = copy_of(dot_dir, tmp_path)
    truncate(out / "train-00002.tar")
    with pytest.raises(PipelineError, match="train-00002.tar: truncated or corrupt"):
        dali.train_dataset(out, batch_size=4, input_size=32, device="cpu")


def test_shard_truncated_while_reading_is_named(dot_dir, tmp_path):
    """Damage after the pipeline started: DALI's own failure is mapped back to the shard."""
    out = copy_of(dot_dir, tmp_path)
    batches = dali.eval_batches(out, batch_size=4, input_size=32, device="cpu")
    next(batches)
    truncate(out / "test-00001.tar")
    with pytest.raises(PipelineError) as e:
        list(batches)
    assert_one_line(str(e.value), "test-00001.tar: truncated or corrupt", "deeppose-fast prepare dots")


def test_corrupt_jpeg_is_named_in_eval(dot_dir, tmp_path):
    out, key = with_bad_jpeg(dot_dir, tmp_path, "test")
    with pytest.raises(PipelineError) as e:
        list(dali.eval_batches(out, batch_size=4, input_size=32, device="cpu"))
    assert_one_line(str(e.value), f"{out}: reading split 'test' failed: record {key:08d} in test-00000.tar: "
                                  f"its JPEG does not decode", "deeppose-fast prepare dots")


def test_corrupt_jpeg_is_named_by_the_tf_dataset(dot_dir, tmp_path):
    """The train loop iterates the dataset: what reaches it is a PipelineError naming the record."""
    out, key = with_bad_jpeg(dot_dir, tmp_path, "train")
    ds = dali.train_dataset(out, batch_size=8, input_size=32, device="cpu")
    iterator = iter(ds)
    with pytest.raises(PipelineError) as e:
        for _ in range(N_TRAIN // 8 + 1):  # one epoch reaches every record
            next(iterator)
    assert_one_line(str(e.value), f"record {key:08d} in train-00000.tar: its JPEG does not decode",
                    "deeppose-fast prepare dots")

