"""The shard format: round trips, DALI's webdataset reader on the shards, atomicity, clear errors."""
from __future__ import annotations

import io
import json
import shlex
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from deeppose_fast.commands.prepare import command as prepare_command
from deeppose_fast.datasets import shards
from deeppose_fast.datasets.shards import NotPreparedError, ShardError, ShardWriter

K = 14


def make_records(n: int, seed: int = 0, first_key: int = 0):
    """n records with JPEGs of different sizes, random poses and metas (some NaN head boxes)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        h, w = rng.integers(20, 60, size=2)
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", image)
        assert ok
        pose = np.zeros((K, 4), np.float32)
        pose[:, :2] = rng.uniform(0, 50, size=(K, 2))
        pose[:, 2] = rng.random(K) < 0.9
        pose[:, 3] = pose[:, 2] * (rng.random(K) < 0.8)
        pose[pose[:, 2] == 0, :2] = 0
        meta = rng.uniform(-10, 100, size=len(shards.META_FIELDS)).astype(np.float32)
        if i % 3 == 0:
            meta[:4] = np.nan
        records.append((first_key + 2 * i, buf.tobytes(), pose, meta))
    return records


def write_split(out_dir, split, records, per_shard):
    with ShardWriter(out_dir, split, records_per_shard=per_shard) as w:
        for r in records:
            w.write(*r)
    return w


def prepared(tmp_path, n_train=7, n_test=3, per_shard=3):
    train = make_records(n_train, seed=1)
    test = make_records(n_test, seed=2, first_key=1000)
    wt = write_split(tmp_path, "train", train, per_shard)
    we = write_split(tmp_path, "test", test, per_shard)
    shards.write_manifest(tmp_path, {"name": "unit", "num_joints": K,
                                     "splits": {"train": wt.summary(), "test": we.summary()}})
    return train, test


def assert_same(records, read):
    assert len(read) == len(records)
    for (key, jpeg, pose, meta), r in zip(records, read):
        assert r.key == key
        assert r.jpeg == jpeg
        assert r.pose.dtype == np.float32 and r.meta.dtype == np.float32
        np.testing.assert_array_equal(r.pose, pose)
        np.testing.assert_array_equal(r.meta, meta)  # NaN == NaN for assert_array_equal


def decoded_size(records) -> int:
    """Bytes of the records' JPEGs decoded to RGB (decoded here, by OpenCV)."""
    return sum(cv2.imdecode(np.frombuffer(r[1], np.uint8), cv2.IMREAD_COLOR).nbytes for r in records)


def test_round_trip_and_layout(tmp_path):
    train, test = prepared(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["manifest.json", "test-00000.idx", "test-00000.tar",
                     "train-00000.idx", "train-00000.tar", "train-00001.idx", "train-00001.tar",
                     "train-00002.idx", "train-00002.tar"]
    manifest = shards.read_manifest(tmp_path)
    assert manifest["splits"]["train"] == {"count": 7, "shards": ["train-00000.tar", "train-00001.tar",
                                                                  "train-00002.tar"],
                                           "decoded_bytes": decoded_size(train)}
    assert manifest["format_version"] == shards.FORMAT_VERSION
    assert_same(train, list(shards.iter_records(tmp_path, "train")))
    assert_same(test, list(shards.iter_records(tmp_path, "test")))

    # webdataset layout: members grouped by key, in key order, 8-digit keys
    with tarfile.open(tmp_path / "train-00001.tar") as tar:
        assert tar.getnames() == [f"{k:08d}.{e}" for k in (6, 8, 10) for e in shards.EXTENSIONS]


def test_writer_reports_shards(tmp_path):
    w = write_split(tmp_path, "train", make_records(5), per_shard=2)
    assert w.shards == [("train-00000.tar", 2), ("train-00001.tar", 2), ("train-00002.tar", 1)]
    assert w.close() == w.shards  # idempotent
    assert w.summary() == {"count": 5, "shards": ["train-00000.tar", "train-00001.tar", "train-00002.tar"],
                           "decoded_bytes": decoded_size(make_records(5))}
    # no temporary file left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_index_matches_tar_offsets(tmp_path):
    """The wds2idx index points at each member's data: check it against tarfile's own offsets."""
    write_split(tmp_path, "train", make_records(4), per_shard=10)
    lines = (tmp_path / "train-00000.idx").read_text().splitlines()
    assert lines[0].split() == ["v1.2", "4"]
    with tarfile.open(tmp_path / "train-00000.tar") as tar:
        members = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
    for line in lines[1:]:
        fields = line.split()
        assert len(fields) == 4 * 3  # ext offset size name, for 3 components
        for ext, offset, size, name in zip(*[iter(fields)] * 4):
            assert name.endswith("." + ext)
            assert members[name] == (int(offset), int(size))


def test_dali_webdataset_reads_shards(tmp_path):
    """DALI's webdataset reader (CPU) returns the same bytes and arrays: the format is what D needs."""
    from nvidia.dali import fn, pipeline_def

    train, _ = prepared(tmp_path)
    tars, idxs = shards.shard_paths(tmp_path, "train")

    @pipeline_def(batch_size=len(train), num_threads=1, device_id=None)
    def pipe():
        jpg, pose, meta = fn.readers.webdataset(
            paths=[str(p) for p in tars], index_paths=[str(p) for p in idxs],
            ext=list(shards.EXTENSIONS), missing_component_behavior="error", random_shuffle=False)
        return jpg, fn.decoders.numpy(pose), fn.decoders.numpy(meta)

    p = pipe()
    p.build()
    jpg, pose, meta = p.run()
    for i, (key, jpeg, pose_ref, meta_ref) in enumerate(train):
        assert np.asarray(jpg[i]).tobytes() == jpeg
        got_pose = np.asarray(pose[i])
        assert got_pose.dtype == np.float32
        np.testing.assert_array_equal(got_pose, pose_ref)
        np.testing.assert_array_equal(np.asarray(meta[i]), meta_ref)


def test_same_records_give_identical_bytes(tmp_path):
    records = make_records(4)
    write_split(tmp_path / "a", "train", records, 10)
    write_split(tmp_path / "b", "train", records, 10)
    assert (tmp_path / "a/train-00000.tar").read_bytes() == (tmp_path / "b/train-00000.tar").read_bytes()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_leaves_nothing_complete(tmp_path, exc):
    prepared(tmp_path)  # an earlier complete preparation in the same folder
    with pytest.raises(exc):
        with ShardWriter(tmp_path, "val", records_per_shard=2) as w:
            for i, r in enumerate(make_records(5)):
                w.write(*r)
                if i == 2:  # one shard complete, one half-written
                    raise exc("stop")
    names = {p.name for p in tmp_path.iterdir()}
    assert not [n for n in names if n.startswith("val") or n.startswith(".")]
    # the old manifest was removed on entry: the folder now reads as not prepared
    assert "manifest.json" not in names
    with pytest.raises(NotPreparedError, match="not prepared or incomplete"):
        shards.read_manifest(tmp_path)


def test_write_validates_records(tmp_path):
    key, jpeg, pose, meta = make_records(1)[0]
    with ShardWriter(tmp_path, "train") as w:
        with pytest.raises(ValueError, match="JPEG"):
            w.write(0, b"PNG", pose, meta)
        with pytest.raises(ValueError, match=r"shape \(K, 4\)"):
            w.write(0, jpeg, pose[:, :2], meta)
        with pytest.raises(ValueError, match="finite"):
            w.write(0, jpeg, np.full_like(pose, np.nan), meta)
        with pytest.raises(ValueError, match=r"meta must have shape \(10,\)"):
            w.write(0, jpeg, pose, meta[:4])
        w.write(5, jpeg, pose, meta)
        with pytest.raises(ValueError, match="strictly increasing"):
            w.write(5, jpeg, pose, meta)
        with pytest.raises(ValueError, match="joints"):
            w.write(6, jpeg, pose[:10], meta)


def test_manifest_errors(tmp_path):
    with pytest.raises(NotPreparedError, match="no such folder"):
        shards.read_manifest(tmp_path / "nope")
    with pytest.raises(NotPreparedError, match=r"manifest.json not found.*not prepared or incomplete"):
        shards.read_manifest(tmp_path)
    prepared(tmp_path)
    (tmp_path / "train-00001.idx").unlink()
    with pytest.raises(ShardError, match=r"train-00001.idx: DALI index"):
        shards.read_manifest(tmp_path)
    (tmp_path / "train-00001.tar").unlink()
    with pytest.raises(ShardError, match=r"train-00001.tar: shard listed .* is missing"):
        shards.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(ShardError, match="manifest.json: not valid JSON"):
        shards.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99, "splits": {}}))
    with pytest.raises(ShardError, match=r"shard format 99, this version reads \d+; rebuild it with `deeppose-fast prepare"):
        shards.read_manifest(tmp_path)
    shards.write_manifest(tmp_path, {"splits": {}})
    with pytest.raises(ShardError, match="no split 'train'"):
        list(shards.iter_records(tmp_path, "train"))


def test_write_manifest_is_atomic(tmp_path, monkeypatch):
    shards.write_manifest(tmp_path, {"splits": {}, "name": "old"})

    def fail(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(json, "dump", fail)  # the manifest writer's json.dump
    with pytest.raises(OSError):
        shards.write_manifest(tmp_path, {"splits": {}, "name": "new"})
    assert json.loads((tmp_path / "manifest.json").read_text())["name"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_truncated_tar_is_reported(tmp_path):
    prepared(tmp_path)
    tar = tmp_path / "train-00001.tar"
    with tarfile.open(tar) as t:
        member = t.getmembers()[-3]  # the last record's jpg
    tar.write_bytes(tar.read_bytes()[: member.offset_data + member.size // 2])  # cut inside a member
    with pytest.raises(ShardError, match=r"train-00001.tar: truncated or corrupt"):
        list(shards.iter_records(tmp_path, "train"))


def test_tar_cut_at_member_boundary_is_reported(tmp_path):
    """A tar cut cleanly after a record reads as a valid shorter archive: the index count catches it."""
    records = make_records(3)
    write_split(tmp_path, "train", records, 10)
    tar = tmp_path / "train-00000.tar"
    with tarfile.open(tar) as t:
        third = t.getmember(f"{records[2][0]:08d}.jpg").offset
    tar.write_bytes(tar.read_bytes()[:third] + b"\0" * 1024)
    with pytest.raises(ShardError, match=r"holds 2 records but its index .* says 3"):
        list(shards.iter_shard(tar))


def test_corrupt_member_is_reported(tmp_path):
    records = make_records(2)
    tar = tmp_path / "train-00000.tar"
    with tarfile.open(tar, "w") as t:
        for name, data in [("00000000.jpg", records[0][1]), ("00000000.pose.npy", b"not numpy"),
                           ("00000000.meta.npy", b"x")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"train-00000.tar: member 00000000.pose.npy is not a valid .npy"):
        list(shards.iter_shard(tar))
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("00000000.jpg")
        info.size = len(records[0][1])
        t.addfile(info, io.BytesIO(records[0][1]))
    with pytest.raises(ShardError, match=r"record 00000000 lacks pose.npy, meta.npy"):
        list(shards.iter_shard(tar))


def test_shard_paths_checks_each_shard_against_its_index(tmp_path):
    """A truncated shard, or a malformed index, is named before any reader opens it (the cheap check DALI
    makes when it starts: every member the index lists ends inside the tar), with the rebuild command."""
    prepared(tmp_path)
    tar = tmp_path / "train-00001.tar"
    size = tar.stat().st_size
    with open(tar, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ShardError) as e:
        shards.shard_paths(tmp_path, "train")
    assert str(e.value).startswith(f"{tar}: truncated or corrupt: its index train-00001.idx lists data up to byte")
    assert f"the file has {size // 2} bytes; re-run `deeppose-fast prepare unit --out {tmp_path.resolve()} " \
           f"--records-per-shard 3` to rebuild it" in str(e.value)
    tars, _ = shards.shard_paths(tmp_path, "test")  # the other split is intact
    assert [t.name for t in tars] == ["test-00000.tar"]

    (tmp_path / "train-00001.idx").write_text("v1.2 3\njpg 0 10\n")
    with pytest.raises(ShardError, match=r"train-00001.idx: malformed DALI index of train-00001.tar"):
        shards.shard_paths(tmp_path, "train")


@pytest.mark.parametrize("manifest, expected", [
    ({"name": "synthetic", "source_root": "/x/raw", "seed": 1701,
      "synthetic": {"scale": "small", "num_images": 24, "seed": 0}},
     {"name": "synthetic", "num_images": 24, "scale": "small", "sources": ()}),
    ({"name": "mpii", "source_root": "/data/mpii-src", "split_mode": "image", "seed": 7,
      "precrop": {"enabled": True, "ext_max": 2.5, "rotation": 15.0, "scale_jitter": 0.0, "jpeg_quality": 90}},
     {"name": "mpii", "split_mode": "image", "seed": 7, "ext_max": 2.5, "max_rotation": 15.0,
      "jpeg_quality": 90}),
    ({"name": "lsp", "source_root": "/data/lsp", "seed": None, "precrop": {"enabled": False}},
     {"name": "lsp", "precrop": False, "seed": 1701}),
])
def test_rebuild_command_is_a_prepare_command_with_the_recorded_settings(tmp_path, manifest, expected):
    """The command parses with `prepare`'s own options and gives back what the manifest records."""
    manifest = {"splits": {"train": {"count": 2, "shards": ["train-00000.tar"]}}, **manifest}
    words = shlex.split(shards.rebuild_command(tmp_path, manifest))
    assert words[:2] == ["deeppose-fast", "prepare"]
    params = prepare_command.make_context("prepare", words[2:]).params
    assert params["out"] == tmp_path.resolve() and params["records_per_shard"] == 1000
    if manifest["name"] != "synthetic":
        expected["sources"] = (Path(manifest["source_root"]),)
    assert {k: params[k] for k in expected} == expected


def test_record_encoding_round_trip():
    """encode_record moves the joints and the head box into the region's frame; decode_record gives back
    the source pixels, NaN where not annotated, with the visibility of annotated joints only."""
    joints = np.array([[105.25, 40.5], [np.nan, np.nan], [130.0, 90.75]], np.float32)
    visible = np.array([True, True, False])
    head = np.array([100, 30, 120, 50], np.float32)
    pose, meta = shards.encode_record(joints, visible, head, (100, 20), 7, 3)
    np.testing.assert_array_equal(pose, [[5.25, 20.5, 1, 1], [0, 0, 0, 0], [30.0, 70.75, 1, 0]])
    np.testing.assert_array_equal(meta, [0, 10, 20, 30, 100, 20, 7, 3, 1, 1])
    back, vis, box = shards.decode_record(shards.Record(7, b"", pose, meta))
    np.testing.assert_array_equal(back, joints)
    np.testing.assert_array_equal(vis, [True, False, False])
    np.testing.assert_array_equal(box, head)
    # a region stored at a quarter of the width and half the height: jpeg = (source - offset) * scale
    pose, meta = shards.encode_record(joints, visible, head, (100, 20), 7, 3, scale=(0.25, 0.5))
    np.testing.assert_array_equal(pose[:, :2], [[1.3125, 10.25], [0, 0], [7.5, 35.375]])
    np.testing.assert_array_equal(meta, [0, 5, 5, 15, 100, 20, 7, 3, 0.25, 0.5])
    back, _, box = shards.decode_record(shards.Record(7, b"", pose, meta))
    np.testing.assert_array_equal(back, joints)
    np.testing.assert_array_equal(box, head)


def test_manifest_object_round_trip(tmp_path):
    """Manifest.write then Manifest.read (and read_manifest's dict) give back every entry, unknown ones
    included; a generator size recorded as 'preset' by earlier versions reads as 'scale'."""
    m = shards.Manifest(name="unit", splits={"test": {"count": 0, "shards": []}}, skeleton="lsp",
                        joint_names=("a", "b"), flip_pairs=((0, 1),), num_joints=2, precrop={"enabled": False},
                        synthetic={"scale": "small", "num_images": 3, "seed": 0}, extra={"note": "kept"})
    m.write(tmp_path)
    assert shards.Manifest.read(tmp_path) == m
    raw = shards.read_manifest(tmp_path)
    assert raw["format_version"] == shards.FORMAT_VERSION and raw["note"] == "kept"
    assert raw["flip_pairs"] == [[0, 1]] and raw["joint_names"] == ["a", "b"]
    old = {**raw, "synthetic": {"preset": "mpii", "num_images": None, "seed": 0}}
    assert shards.Manifest.from_dict(old).synthetic == {"scale": "mpii", "num_images": None, "seed": 0}
