"""prepare(): synthetic and official-format inputs (folders, archives, downloads from 127.0.0.1) to shards
and back; the pre-crop rule against the codec's crops; bad images, joints outside the image, and
interrupted runs that must not leave complete-looking output."""
from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tarfile
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from deeppose_fast import datasets, skeleton
from deeppose_fast.datasets import DatasetError, DatasetWarning, jpeg, shards, synthetic
from deeppose_fast.datasets import prepare as P


def load_split(out, split):
    """{person_index: Record} of a prepared split, read back through the shard reader."""
    return {int(r.meta[6]): r for r in shards.iter_records(out, split)}


def source_coords(record):
    """(K, 2) joints in source pixels (NaN where not annotated) and (4,) head box from a record: the
    format's definition ``source = jpeg / scale + offset``, written out (meta: offset at 4:6, scale 8:10)."""
    pose, meta = record.pose.astype(np.float64), record.meta.astype(np.float64)
    joints = np.where(pose[:, 2:3] > 0, pose[:, :2] / meta[8:10] + meta[4:6], np.nan)
    return joints, meta[:4] / np.tile(meta[8:10], 2) + np.tile(meta[4:6], 2)


def copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


# -------------------------------------------------------------------------------------------------
def test_jpeg_checks():
    img = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", img)[1].tobytes()
    assert jpeg.check_jpeg(data) == (53, 37)
    with pytest.raises(ValueError, match="truncated"):
        jpeg.check_jpeg(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a JPEG"):
        jpeg.check_jpeg(cv2.imencode(".png", img)[1].tobytes())
    with pytest.raises(ValueError, match="truncated"):
        jpeg.check_jpeg(data[:40])


# -------------------------------------------------------------------------------------------------
def test_synthetic_round_trip(tmp_path):
    out = tmp_path / "syn"
    with pytest.warns(DatasetWarning):
        manifest = P.prepare("synthetic", out, num_images=30, synthetic_seed=3, workers=1, progress=False,
                             records_per_shard=7)
    truth = synthetic.Truth.load(out / "raw")
    keep = truth.annotated & (np.isfinite(truth.joints[..., 0]).sum(1) >= datasets.SYNTHETIC_MIN_JOINTS)
    assert manifest["num_people"] == keep.sum()
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["test"]["count"] == keep.sum()
    assert len(manifest["splits"]["train"]["shards"]) == -(-manifest["splits"]["train"]["count"] // 7)
    assert manifest["joint_names"] == list(skeleton.MPII.joint_names)
    assert manifest["sources"][synthetic.MPII_MAT] == hashlib.sha256(
        (out / "raw" / synthetic.MPII_MAT).read_bytes()).hexdigest()
    records = {**load_split(out, "train"), **load_split(out, "test")}
    expected_rows = np.flatnonzero(keep)
    assert len(records) == len(expected_rows)
    by_key = {(int(truth.image_index[r]), int(truth.rect_index[r])): r for r in expected_rows}
    for p, rec in records.items():
        assert rec.key == p
        image_id = int(rec.meta[7])
        # people are numbered in file order: the p-th kept person is the p-th expected row
        row = expected_rows[p]
        assert by_key[(image_id, int(truth.rect_index[row]))] == row
        joints, head = source_coords(rec)
        np.testing.assert_allclose(joints, truth.joints[row], atol=1e-3)  # NaN where not annotated
        np.testing.assert_allclose(head, truth.head_box[row], atol=1e-3)
        np.testing.assert_array_equal(rec.pose[:, 3] > 0, truth.visible_flag[row] == 1)
        # the pre-crop pixels are the source pixels (re-encoded at quality 95)
        x0, y0 = int(rec.meta[4]), int(rec.meta[5])
        crop = cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), cv2.IMREAD_COLOR)
        src = cv2.imread(str(out / "raw" / "images" / truth.image_names[row]))
        ref = src[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        assert np.abs(crop.astype(int) - ref).mean() < 3.0
    train_ids = {int(r.meta[7]) for r in load_split(out, "train").values()}
    test_ids = {int(r.meta[7]) for r in load_split(out, "test").values()}
    assert test_ids and not train_ids & test_ids  # image-level split


def test_no_precrop_keeps_original_bytes(tmp_path, synthetic_mpii_dir):
    out = tmp_path / "orig"
    with pytest.warns(DatasetWarning):
        P.prepare("mpii", out, source=[synthetic_mpii_dir], rule=P.PrecropRule(enabled=False), workers=1,
                  progress=False)
    with pytest.warns(DatasetWarning):
        data = datasets.read("mpii", synthetic_mpii_dir)
    for split in ("train", "test"):
        for p, rec in load_split(out, split).items():
            assert rec.jpeg == Path(data.image_paths[p]).read_bytes()
            assert tuple(rec.meta[4:6]) == (0, 0)
            np.testing.assert_allclose(rec.pose[:, :2], data.joints[p], atol=1e-4)
            assert data.split[p] == split


def test_mpii_from_official_archives(tmp_path, synthetic_mpii_dir):
    """Both MPII archives in their official layouts: images tar.gz and the annotation zip."""
    tgz = tmp_path / "mpii_human_pose_v1.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(synthetic_mpii_dir / "images", arcname="images")
    zpath = tmp_path / "mpii_human_pose_v1_u12_2.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(synthetic_mpii_dir / synthetic.MPII_MAT, f"mpii_human_pose_v1_u12_2/{synthetic.MPII_MAT}")
    out = tmp_path / "out"
    with pytest.warns(DatasetWarning):
        manifest = P.prepare("mpii", out, source=[tgz, zpath], workers=1, progress=False)
    truth = synthetic.Truth.load(synthetic_mpii_dir)
    full = truth.annotated & np.isfinite(truth.joints[..., 0]).all(1)
    n = int(full.sum())
    assert manifest["num_people"] == n
    assert manifest["splits"]["test"]["count"] == int(0.1 * n)
    assert manifest["sources"]["mpii_human_pose_v1.tar.gz"] == hashlib.sha256(tgz.read_bytes()).hexdigest()
    assert manifest["sources"]["mpii_human_pose_v1_u12_2.zip"] == hashlib.sha256(zpath.read_bytes()).hexdigest()
    perm = np.random.RandomState(1701).permutation(n)
    assert set(load_split(out, "test")) == set(perm[: int(0.1 * n)].tolist())
    rows = np.flatnonzero(full)
    for p, rec in {**load_split(out, "train"), **load_split(out, "test")}.items():
        joints, head = source_coords(rec)
        np.testing.assert_allclose(joints, truth.joints[rows[p]], atol=1e-3)
        np.testing.assert_allclose(head, truth.head_box[rows[p]], atol=1e-3)
    # a second run reuses the extraction and replaces the shards
    with pytest.warns(DatasetWarning):
        again = P.prepare("mpii", out, source=[tgz, zpath], workers=1, progress=False, records_per_shard=3,
                          split_mode="image", replace=True)
    tars = sorted(p.name for p in out.glob("*.tar"))
    assert tars == sorted(again["splits"]["train"]["shards"] + again["splits"]["test"]["shards"])


def make_lsp_archives(tmp_path, synthetic_lsp_dir, synthetic_lspet_dir):
    """The official zips: each holds images/ and joints.mat at its top level."""
    paths = []
    for name, folder in (("lsp_dataset_original.zip", synthetic_lsp_dir), ("lspet_dataset.zip", synthetic_lspet_dir)):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            zf.write(folder / "joints.mat", "joints.mat")
            for img in sorted((folder / "images").iterdir()):
                zf.write(img, f"images/{img.name}")
        paths.append(path)
    return paths


def check_lsp_ext(out, manifest, synthetic_lsp_dir, synthetic_lspet_dir):
    lsp_truth, lspet_truth = synthetic.Truth.load(synthetic_lsp_dir), synthetic.Truth.load(synthetic_lspet_dir)
    n_lsp = len(lsp_truth.image_names)
    lspet_keep = np.isfinite(lspet_truth.joints[..., 0]).any(1)
    assert manifest["splits"]["test"]["count"] == n_lsp - n_lsp // 2
    assert manifest["splits"]["train"]["count"] == n_lsp // 2 + lspet_keep.sum()
    expected = np.concatenate([lsp_truth.joints, lspet_truth.joints[lspet_keep]])
    records = {**load_split(out, "train"), **load_split(out, "test")}
    for p, rec in records.items():
        np.testing.assert_allclose(source_coords(rec)[0], expected[p], atol=1e-3)
        assert np.isnan(rec.meta[:4]).all()  # LSP has no head boxes
    assert manifest["skeleton"] == "lsp" and manifest["flip_pairs"][0] == [8, 9]


def test_lsp_ext_from_archives(tmp_path, synthetic_lsp_dir, synthetic_lspet_dir):
    archives = make_lsp_archives(tmp_path, synthetic_lsp_dir, synthetic_lspet_dir)
    out = tmp_path / "out"
    manifest = P.prepare("lsp-ext", out, source=archives, workers=1, progress=False)
    check_lsp_ext(out, manifest, synthetic_lsp_dir, synthetic_lspet_dir)
    assert (out / "raw" / "lspet_dataset" / "joints.mat").is_file()


def test_lsp_ext_keeps_both_annotation_checksums(tmp_path, synthetic_lsp_dir, synthetic_lspet_dir):
    """LSP's and LSPET's files are both called joints.mat: the manifest keys them by their path under the
    source, so neither checksum is lost (as archives: by the archive and the path inside the extraction)."""
    source = tmp_path / "src"
    for name, folder in (("lsp_dataset_original", synthetic_lsp_dir), ("lspet_dataset", synthetic_lspet_dir)):
        shutil.copytree(folder, source / name)
    manifest = P.prepare("lsp-ext", tmp_path / "out", source=[source], workers=1, progress=False)
    digest = {name: hashlib.sha256((folder / "joints.mat").read_bytes()).hexdigest()
              for name, folder in (("lsp", synthetic_lsp_dir), ("lspet", synthetic_lspet_dir))}
    assert digest["lsp"] != digest["lspet"]
    assert manifest["sources"] == {"lsp_dataset_original/joints.mat": digest["lsp"],
                                   "lspet_dataset/joints.mat": digest["lspet"]}
    archives = make_lsp_archives(tmp_path, synthetic_lsp_dir, synthetic_lspet_dir)
    manifest = P.prepare("lsp-ext", tmp_path / "out2", source=archives, workers=1, progress=False)
    assert {k: v for k, v in manifest["sources"].items() if k.endswith("joints.mat")} == {
        "lsp_dataset_original/joints.mat": digest["lsp"], "lspet_dataset/joints.mat": digest["lspet"]}


def test_joints_mat_through_a_link_uses_the_images_where_it_was_found(tmp_path, synthetic_lsp_dir):
    """A data set folder whose joints.mat is a link to a file kept elsewhere (without images): the images
    are those of the folder holding the link."""
    kept = tmp_path / "annotations"
    kept.mkdir()
    shutil.copy(synthetic_lsp_dir / "joints.mat", kept / "joints.mat")
    folder = tmp_path / "lsp"
    shutil.copytree(synthetic_lsp_dir / "images", folder / "images")
    (folder / "joints.mat").symlink_to(kept / "joints.mat")
    manifest = P.prepare("lsp", tmp_path / "out", source=[folder], workers=1, progress=False)
    truth = synthetic.Truth.load(synthetic_lsp_dir)
    assert manifest["num_people"] == len(truth.image_names)
    assert P.SKIP_MISSING_IMAGE not in manifest["skipped"]
    assert sum(s["count"] for s in manifest["splits"].values()) == len(truth.image_names)
    assert manifest["sources"] == {"joints.mat": hashlib.sha256((kept / "joints.mat").read_bytes()).hexdigest()}


def test_lsp_ext_downloaded_from_local_server(tmp_path, synthetic_lsp_dir, synthetic_lspet_dir):
    served = tmp_path / "served"
    served.mkdir()
    archives = make_lsp_archives(served, synthetic_lsp_dir, synthetic_lspet_dir)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        out = tmp_path / "out"
        manifest = P.prepare("lsp-ext", out, download=True, base_url=f"http://127.0.0.1:{httpd.server_address[1]}",
                             workers=1, progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    check_lsp_ext(out, manifest, synthetic_lsp_dir, synthetic_lspet_dir)
    for a in archives:
        assert manifest["sources"][a.name] == hashlib.sha256(a.read_bytes()).hexdigest()
        assert (out / "downloads" / a.name).read_bytes() == a.read_bytes()


# -------------------------------------------------------------------------------------------------
def test_bad_images_are_skipped_and_counted(tmp_path, synthetic_mpii_dir):
    root = copy_tree(synthetic_mpii_dir, tmp_path / "mpii")
    with pytest.warns(DatasetWarning):
        data = datasets.read("synthetic", root)
    paths = list(dict.fromkeys(data.image_paths))  # distinct, in order
    per_image = {p: int((data.image_paths == p).sum()) for p in paths}
    missing, truncated, garbage, png = paths[0], paths[1], paths[2], paths[3]
    Path(missing).unlink()
    raw = Path(truncated).read_bytes()
    Path(truncated).write_bytes(raw[: len(raw) * 2 // 3])
    Path(garbage).write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9")
    Path(png).write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    out = tmp_path / "out"
    with pytest.warns(DatasetWarning) as record:
        manifest = P.prepare("synthetic", out, source=[root], workers=2, progress=False)
    assert manifest["skipped"][P.SKIP_MISSING_IMAGE] == per_image[missing]
    assert manifest["skipped"][P.SKIP_CORRUPT_IMAGE] == per_image[truncated] + per_image[garbage] + per_image[png]
    total = manifest["splits"]["train"]["count"] + manifest["splits"]["test"]["count"]
    assert total == len(data) - sum(per_image[p] for p in (missing, truncated, garbage, png))
    messages = " ".join(str(w.message) for w in record)
    assert P.SKIP_MISSING_IMAGE in messages and P.SKIP_CORRUPT_IMAGE in messages


def test_joints_outside_the_image(tmp_path):
    """LSP format with hand-placed joints: some outside the image (kept, counted), a person entirely
    outside (skipped), negative coordinates (outside to the left)."""
    folder = tmp_path / "lsp"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(2)
    n, W, H = 6, 120, 90
    xy = np.stack([rng.uniform(20, 100, (n, 14)), rng.uniform(20, 70, (n, 14))], -1)
    xy[1, 0] = (W + 30, 40)  # one joint right of the image
    xy[2, :3] = (-5, 40)  # negative coordinates: left of the image
    xy[3] = xy[3] + (1000, 0)  # the whole person outside
    arr = np.concatenate([xy, np.zeros((n, 14, 1))], -1).transpose(2, 1, 0)
    scipy.io.savemat(str(folder / "joints.mat"), {"joints": arr})
    for i in range(n):
        cv2.imwrite(str(folder / "images" / f"im{i + 1:04d}.jpg"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    out = tmp_path / "out"
    with pytest.warns(DatasetWarning) as record:
        manifest = P.prepare("lsp", out, source=[folder], workers=1, progress=False)
    assert manifest["skipped"] == {P.SKIP_OUTSIDE: 1}
    assert manifest["warnings"] == {P.WARN_OUTSIDE: 4}
    records = {**load_split(out, "train"), **load_split(out, "test")}
    assert sorted(records) == [0, 1, 2, 4, 5]
    np.testing.assert_allclose(source_coords(records[1])[0], xy[1] - 0.5, atol=1e-4)
    assert records[1].pose[0, 2] == 1  # kept as annotated
    assert any("outside the image" in str(w.message) for w in record)


def test_interrupt_keeps_the_previous_data_set(tmp_path, synthetic_mpii_dir, monkeypatch):
    """A re-run stopped half-way (Ctrl-C) leaves the earlier complete data set exactly as it was, and none
    of its own files."""
    out = tmp_path / "out"
    with pytest.warns(DatasetWarning):
        P.prepare("synthetic", out, source=[synthetic_mpii_dir], workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    original = P._process_image

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(P, "_process_image", flaky)
    with pytest.raises(KeyboardInterrupt), pytest.warns(DatasetWarning):
        P.prepare("synthetic", out, source=[synthetic_mpii_dir], workers=1, progress=False, records_per_shard=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary folder either
    shards.read_manifest(out)


def test_file_level_errors(tmp_path, synthetic_lsp_dir):
    bad_zip = tmp_path / "lsp_dataset_original.zip"
    with zipfile.ZipFile(bad_zip, "w") as zf:
        zf.writestr("joints.mat", b"0" * 5000)
    bad_zip.write_bytes(bad_zip.read_bytes()[:-30])  # cut the central directory
    with pytest.raises(DatasetError, match=r"lsp_dataset_original.zip: (truncated or corrupt|not a zip)"):
        P.prepare("lsp", tmp_path / "out", source=[bad_zip], progress=False)
    with pytest.raises(DatasetError, match="nothing to read"):
        P.prepare("lsp", tmp_path / "out", progress=False)
    root = copy_tree(synthetic_lsp_dir, tmp_path / "lsp")
    (root / "joints.mat").write_bytes(b"garbage" * 100)
    with pytest.raises(DatasetError, match=str(root / "joints.mat")):
        P.prepare("lsp", tmp_path / "out", source=[root], progress=False)
    assert not list((tmp_path / "out").glob("*.tar"))


def _struct(rows, fields):
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[0, i][f] = row.get(f, np.zeros((0, 0)))
    return arr


def test_real_mpii_photos(tmp_path, mpii_sample_dir):
    """The five real MPII photos (1280 x 720 and 854 x 480) with their joints, written as MPII's .mat
    (the fixture's joints are 0-based pixel indices, i.e. MATLAB's minus 1)."""
    people = json.loads((mpii_sample_dir / "test_mpii.json").read_text())
    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    annolist = []
    for p in people:
        (root / "images" / p["image"]).symlink_to(mpii_sample_dir / p["image"])
        pts = [{"id": float(j), "x": x + 1.0, "y": y + 1.0, "is_visible": 1.0}
               for j, ((x, y), v) in enumerate(zip(p["joints"], p["joints_vis"])) if v]
        rect = {"x1": 1.0, "y1": 1.0, "x2": 2.0, "y2": 2.0,
                "annopoints": _struct([{"point": _struct(pts, ("id", "x", "y", "is_visible"))}], ("point",))}
        annolist.append({"image": _struct([{"name": p["image"]}], ("name",)),
                         "annorect": _struct([rect], ("x1", "y1", "x2", "y2", "annopoints"))})
    release = _struct([{"annolist": _struct(annolist, ("image", "annorect")),
                        "img_train": np.ones((1, len(people)))}], ("annolist", "img_train"))
    scipy.io.savemat(str(root / "mpii_human_pose_v1_u12_1.mat"), {"RELEASE": release})
    out = tmp_path / "out"
    with pytest.warns(DatasetWarning, match="too few"):
        manifest = P.prepare("mpii", out, source=[root], workers=1, progress=False)
    full = [p for p in people if all(p["joints_vis"])]
    assert manifest["num_people"] == len(full) == 3
    records = {**load_split(out, "train"), **load_split(out, "test")}
    scales = []
    for i, p in enumerate(full):
        rec = records[i]
        # the source-pixel round trip through the region stored at reduced resolution
        np.testing.assert_allclose(source_coords(rec)[0], np.array(p["joints"]) + 0.5, atol=1e-3)
        crop = cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), cv2.IMREAD_COLOR)
        x0, y0 = int(rec.meta[4]), int(rec.meta[5])
        sx, sy = rec.meta[8:10]
        scales.append(min(sx, sy))
        w, h = round(crop.shape[1] / sx), round(crop.shape[0] / sy)  # the region in source pixels
        np.testing.assert_allclose([crop.shape[1] / w, crop.shape[0] / h], [sx, sy], rtol=1e-6)
        photo = cv2.imread(str(mpii_sample_dir / p["image"]))
        ref = cv2.resize(photo[y0:y0 + h, x0:x0 + w], crop.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(crop.astype(int) - ref).mean() < 3.0
        inside = (rec.pose[:, 0] >= 0) & (rec.pose[:, 0] <= crop.shape[1]) & (rec.pose[:, 1] <= crop.shape[0])
        assert inside.all()
    assert min(scales) < 0.9  # these people are large enough to be stored smaller


def with_exif_orientation(jpeg: bytes, value: int, order: str = "big") -> bytes:
    """Insert an APP1 Exif segment holding only the orientation tag (0x0112, SHORT) after SOI."""
    bo = (lambda v, n: v.to_bytes(n, order))
    tiff = (b"MM" if order == "big" else b"II") + bo(42, 2) + bo(8, 4) + bo(1, 2) \
        + bo(0x0112, 2) + bo(3, 2) + bo(1, 4) + bo(value, 2) + b"\0\0" + bo(0, 4)
    body = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def test_exif_orientation(tmp_path):
    rng = np.random.default_rng(4)
    img = np.zeros((60, 90, 3), np.uint8)
    img[:, :45] = 255  # left half white: a rotation would show
    plain = cv2.imencode(".jpg", img)[1].tobytes()
    assert jpeg.exif_orientation(plain) == 1
    assert jpeg.exif_orientation(with_exif_orientation(plain, 6)) == 6
    assert jpeg.exif_orientation(with_exif_orientation(plain, 3, "little")) == 3
    assert jpeg.check_jpeg(with_exif_orientation(plain, 6)) == (90, 60)
    folder = tmp_path / "lsp"
    (folder / "images").mkdir(parents=True)
    xy = np.stack([rng.uniform(20, 70, (2, 14)), rng.uniform(15, 45, (2, 14))], -1)
    scipy.io.savemat(str(folder / "joints.mat"),
                     {"joints": np.concatenate([xy, np.zeros((2, 14, 1))], -1).transpose(2, 1, 0)})
    for i in range(2):
        (folder / "images" / f"im{i + 1:04d}.jpg").write_bytes(with_exif_orientation(plain, 6))
    with pytest.warns(DatasetWarning, match="EXIF orientation"):
        manifest = P.prepare("lsp", tmp_path / "orig", source=[folder], rule=P.PrecropRule(enabled=False),
                             progress=False)
    assert manifest["warnings"] == {P.WARN_EXIF: 2}
    manifest = P.prepare("lsp", tmp_path / "pre", source=[folder], progress=False)
    assert manifest["warnings"] == {}
    rec = next(shards.iter_records(tmp_path / "pre", "train"))
    crop = cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), cv2.IMREAD_COLOR)
    x0, y0 = int(rec.meta[4]), int(rec.meta[5])
    # the stored pixel grid, not the EXIF-rotated one
    assert np.abs(crop.astype(int) - img[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]).mean() < 3
