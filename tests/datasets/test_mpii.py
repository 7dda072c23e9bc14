"""MPII parser: struct quirks, head boxes, the DTF person split (seed 1701) and the image split, errors.

The .mat files are built here with scipy.io.savemat as MATLAB struct arrays, with the quirks of the
real file written on purpose; expected values come from the generator's own numbers."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from deeppose_fast import datasets, skeleton
from deeppose_fast.datasets import DatasetError, DatasetWarning, mpii, synthetic

EMPTY = np.zeros((0, 0))


def struct_array(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A 1 x n MATLAB struct array (savemat writes structured object arrays as structs)."""
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[0, i][f] = row.get(f, EMPTY)
    return arr


def write_release(path, images: list[dict]) -> None:
    """images: {"name", "train", "rects": [{"head": (x1, y1, x2, y2) | None,
    "points": [(id, x, y, is_visible)] | None}]} in 1-based file pixels."""
    annolist = []
    for im in images:
        rects = []
        for rect in im["rects"]:
            row = {}
            if rect.get("head") is not None:
                row.update(zip(("x1", "y1", "x2", "y2"), map(float, rect["head"])))
            if rect.get("points") is not None:
                pts = [{"id": jid, "x": x, "y": y, "is_visible": v} for jid, x, y, v in rect["points"]]
                row["annopoints"] = struct_array([{"point": struct_array(pts, ("id", "x", "y", "is_visible"))}],
                                                 ("point",))
            row["scale"] = 1.0
            rects.append(row)
        fields = ("x1", "y1", "x2", "y2", "annopoints", "scale")
        annolist.append({"image": struct_array([{"name": im["name"]}], ("name",)),
                         "annorect": struct_array(rects, fields) if rects else EMPTY})
    release = struct_array([{"annolist": struct_array(annolist, ("image", "annorect")),
                             "img_train": np.array([[im["train"] for im in images]], dtype=np.uint8)}],
                           ("annolist", "img_train"))
    scipy.io.savemat(str(path), {"RELEASE": release})


def make_people(rng, num_images: int, max_people: int = 3):
    """Random images with 1..max_people people, all 16 joints; returns (images, expected list)."""
    images, expected = [], []
    for i in range(num_images):
        rects = []
        for r in range(rng.integers(1, max_people + 1)):
            xy = rng.uniform(1, 600, size=(16, 2)).round(3)
            vis = rng.integers(0, 2, size=16)
            order = rng.permutation(16)  # the file does not sort points by id
            head = tuple(rng.uniform(1, 600, 4).round(2))
            rects.append({"head": head, "points": [(int(j), xy[j, 0], xy[j, 1], int(vis[j])) for j in order]})
            expected.append({"image_id": i, "rect": r, "xy": xy, "vis": vis.astype(bool), "head": head})
        images.append({"name": f"{i:09d}.jpg", "train": 1, "rects": rects})
    return images, expected


def make_root(tmp_path, images):
    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    write_release(root / mpii.MAT_NAME, images)
    return root


def test_parses_joints_heads_and_order(tmp_path):
    rng = np.random.default_rng(3)
    images, expected = make_people(rng, 12)
    data = datasets.read("mpii", make_root(tmp_path, images))
    assert len(data) == len(expected)
    assert data.skeleton is skeleton.MPII and data.joints.shape == (len(expected), 16, 2)
    for p, e in enumerate(expected):
        np.testing.assert_allclose(data.joints[p], e["xy"] - 0.5, atol=1e-4)  # 1-based -> continuous
        np.testing.assert_array_equal(data.visible[p], e["vis"])
        np.testing.assert_allclose(data.head_box[p], np.array(e["head"]) - 0.5, atol=1e-4)
        assert data.image_ids[p] == e["image_id"] and data.rect_ids[p] == e["rect"]
        assert data.image_paths[p].endswith(f"images/{e['image_id']:09d}.jpg")
    assert data.joints.dtype == np.float32 and data.head_box.dtype == np.float32


def test_struct_quirks(tmp_path):
    full = [(j, 10.0 + j, 20.0 + j, 1) for j in range(16)]
    images = [
        # one image with one person: loadmat squeezes it to a bare struct, not an array
        {"name": "a.jpg", "train": 1, "rects": [{"head": (1, 2, 3, 4), "points": full}]},
        # several people: one complete, one without annopoints, one with 15 joints (knee missing)
        {"name": "b.jpg", "train": 1, "rects": [
            {"head": (5, 6, 7, 8), "points": [(j, 30.0 + j, 40.0, "1" if j % 2 else EMPTY) for j in range(16)]},
            {"head": (5, 6, 7, 8), "points": None},
            {"head": (1, 1, 2, 2), "points": [p for p in full if p[0] != 1]},
        ]},
        # test image: people without joints
        {"name": "c.jpg", "train": 0, "rects": [{"head": None, "points": None}, {"head": None, "points": None}]},
        # training image without people
        {"name": "d.jpg", "train": 1, "rects": []},
        # odd is_visible values: strings, an empty string, an unexpected number
        {"name": "e.jpg", "train": 1, "rects": [
            {"head": (1, 2, 3, 4), "points": [(j, 50.0, 60.0, ["0", "1", "", 2][j % 4]) for j in range(16)]}]},
    ]
    with pytest.warns(DatasetWarning) as record:
        data = datasets.read("mpii", make_root(tmp_path, images))
    assert [str(p).rsplit("/", 1)[1] for p in data.image_paths] == ["a.jpg", "b.jpg", "e.jpg"]
    np.testing.assert_array_equal(data.rect_ids, [0, 0, 0])
    np.testing.assert_array_equal(data.image_ids, [0, 1, 4])
    np.testing.assert_allclose(data.joints[0, :, 0], np.arange(16) + 9.5)
    assert data.visible[0].all()
    # '1' -> visible; empty -> annotated but not visible
    np.testing.assert_array_equal(data.visible[1], np.arange(16) % 2 == 1)
    assert np.isfinite(data.joints[1]).all()
    np.testing.assert_array_equal(data.visible[2], np.arange(16) % 4 == 1)
    assert data.skipped == {mpii.SKIP_NO_POINTS: 1, mpii.SKIP_TOO_FEW: 1, mpii.SKIP_TEST_IMAGE: 2}
    messages = " ".join(str(w.message) for w in record)
    assert "too few annotated joints" in messages and "no annotated joint" in messages


def test_synthetic_keeps_partial_people(tmp_path):
    pts = [(j, 10.0 + j, 20.0, 1) for j in range(16)]
    images = [{"name": f"{i}.jpg", "train": 1, "rects": [
        {"head": (1, 2, 3, 4), "points": pts[: 16 - i]}]} for i in range(10)]  # 16 .. 7 joints
    with pytest.warns(DatasetWarning, match="too few"):
        data = datasets.read("synthetic", make_root(tmp_path, images))
    assert len(data) == 16 - datasets.SYNTHETIC_MIN_JOINTS + 1  # 16 .. 8 joints kept
    np.testing.assert_array_equal(data.annotated.sum(1), np.arange(16, datasets.SYNTHETIC_MIN_JOINTS - 1, -1))
    assert np.isnan(data.joints[1, 15]).all() and not data.visible[1, 15]


def test_bad_records_are_skipped(tmp_path):
    good = [(j, 10.0 + j, 20.0, 1) for j in range(16)]
    nan = [(j, np.nan if j == 3 else 10.0, 20.0, 1) for j in range(16)]
    dup = good[:15] + [(0, 1.0, 1.0, 1)]
    bad_id = good[:15] + [(16, 1.0, 1.0, 1)]
    images = [{"name": "a.jpg", "train": 1, "rects": [{"points": p} for p in (good, nan, dup, bad_id)]}]
    with pytest.warns(DatasetWarning):
        data = datasets.read("mpii", make_root(tmp_path, images))
    assert len(data) == 1
    assert data.skipped == {mpii.SKIP_NONFINITE: 1, mpii.SKIP_DUP_ID: 1, mpii.SKIP_BAD_ID: 1}
    assert np.isnan(data.head_box).all()  # no head box in the file -> NaN


def test_dtf_person_split_matches_reference():
    n = 19919  # people in the real MPII release with all 16 joints on training images
    split = datasets.person_split(n)
    assert (split == "test").sum() == 1991 and (split == "train").sum() == 17928
    state = np.random.get_state()
    try:  # DTF / mitmul: the global generator
        np.random.seed(1701)
        perm = np.random.permutation(n)
    finally:
        np.random.set_state(state)
    np.testing.assert_array_equal(np.flatnonzero(split == "test"), np.sort(perm[: int(0.1 * n)]))


def test_read_uses_seed_1701_over_people_in_file_order(tmp_path):
    rng = np.random.default_rng(5)
    images, expected = make_people(rng, 30)
    data = datasets.read("mpii", make_root(tmp_path, images))
    n = len(expected)
    perm = np.random.RandomState(1701).permutation(n)
    assert set(np.flatnonzero(data.split == "test")) == set(perm[: int(0.1 * n)])
    assert data.counts() == {"train": n - int(0.1 * n), "test": int(0.1 * n)}


def test_image_split_has_no_image_in_both(tmp_path):
    rng = np.random.default_rng(6)
    images, expected = make_people(rng, 60, max_people=4)
    data = datasets.read("mpii", make_root(tmp_path, images), split_mode="image")
    train_images = set(data.image_ids[data.split == "train"])
    test_images = set(data.image_ids[data.split == "test"])
    assert not train_images & test_images
    assert len(test_images) == int(0.1 * 60)
    assert len(data) == len(expected)
    other = datasets.read("mpii", make_root(tmp_path / "x", images), split_mode="image", seed=2)
    assert not np.array_equal(other.split, data.split)


@pytest.mark.parametrize("case", ["not_mat", "short_text", "truncated", "no_release", "length_mismatch",
                                  "no_people", "no_mat"])
def test_file_errors_name_the_file(tmp_path, case):
    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    path = root / mpii.MAT_NAME
    if case == "not_mat":
        path.write_bytes(b"this is not a MATLAB file at all" * 10)
    elif case == "short_text":  # e.g. a Git LFS pointer in place of the file
        path.write_text("version https://git-lfs.github.com/spec/v1\nsize 12\n")
    elif case == "truncated":
        write_release(path, [{"name": "a.jpg", "train": 1, "rects": []}] * 30)
        path.write_bytes(path.read_bytes()[:-200])
    elif case == "no_release":
        scipy.io.savemat(str(path), {"something": np.zeros(3)})
    elif case == "length_mismatch":
        release = struct_array([{"annolist": struct_array([{"image": struct_array([{"name": "a.jpg"}], ("name",)),
                                                            "annorect": EMPTY}], ("image", "annorect")),
                                 "img_train": np.array([[1, 0]])}], ("annolist", "img_train"))
        scipy.io.savemat(str(path), {"RELEASE": release})
    elif case == "no_people":
        write_release(path, [{"name": "a.jpg", "train": 1, "rects": []}])
    with pytest.raises(DatasetError) as err:
        datasets.read("mpii", root)
    message = str(err.value)
    if case == "no_mat":
        assert str(root) in message and mpii.MAT_NAME in message
    else:
        assert str(path) in message
    bad_file = "not a readable MATLAB file (corrupt, truncated or not a .mat file"
    expected_words = {"not_mat": bad_file, "short_text": bad_file, "truncated": bad_file,
                      "no_release": "no struct 'RELEASE'",
                      "length_mismatch": "img_train has 2 entries", "no_people": "no usable people",
                      "no_mat": "no " + mpii.MAT_NAME}
    assert expected_words[case] in message


def test_finds_files_in_extracted_archive_layout(tmp_path):
    rng = np.random.default_rng(8)
    images, expected = make_people(rng, 3)
    raw = tmp_path / "raw"
    (raw / "mpii_human_pose_v1" / "images").mkdir(parents=True)
    (raw / "mpii_human_pose_v1_u12_2" / "mpii_human_pose_v1_u12_2").mkdir(parents=True)
    write_release(raw / "mpii_human_pose_v1_u12_2" / "mpii_human_pose_v1_u12_2" / mpii.MAT_NAME, images)
    data = datasets.read("mpii", raw)
    assert len(data) == len(expected)
    assert data.image_paths[0] == str(raw / "mpii_human_pose_v1" / "images" / "000000000.jpg")


@pytest.mark.parametrize("name", ["mpii", "synthetic"])
def test_against_generator_truth(synthetic_mpii_dir, name):
    """The generator writes MPII's format with its quirks and saves what it drew."""
    truth = synthetic.Truth.load(synthetic_mpii_dir)
    count = np.isfinite(truth.joints[..., 0]).sum(1)
    rows = np.flatnonzero(truth.annotated & (count >= (16 if name == "mpii" else datasets.SYNTHETIC_MIN_JOINTS)))
    with pytest.warns(DatasetWarning):
        data = datasets.read(name, synthetic_mpii_dir)
    assert len(data) == len(rows)
    np.testing.assert_array_equal(data.image_ids, truth.image_index[rows])
    np.testing.assert_array_equal(data.rect_ids, truth.rect_index[rows])
    np.testing.assert_allclose(data.joints, truth.joints[rows], atol=1e-3)  # NaN pattern included
    np.testing.assert_allclose(data.head_box, truth.head_box[rows], atol=1e-3)
    np.testing.assert_array_equal(data.visible, truth.visible_flag[rows] == 1)  # empty flag -> False
    assert [p.rsplit("/", 1)[1] for p in data.image_paths] == list(truth.image_names[rows])
