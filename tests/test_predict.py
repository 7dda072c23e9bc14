"""Prediction on one's own images: the crop geometry, outputs, and clear errors on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from deeppose_fast import checkpoint, predict, skeleton, viz
from deeppose_fast import model as model_lib
from deeppose_fast.pipeline.contract import NORM_EPSILON
from deeppose_fast.specs import ModelSpec

S = 67
# He init: the reference's small truncated normals give a tiny network an output that ignores its
# input, which would let a wrong crop or normalisation pass unnoticed
SPEC = ModelSpec(input_size=S, width=0.25, fc_units=16, dropout=0.0, init="he")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    keras.utils.set_random_seed(0)
    m = model_lib.build(SPEC, 16)
    d = tmp_path_factory.mktemp("ckpt")
    meta = {"num_joints": 16, "skeleton": "mpii", "model": SPEC.to_dict(),
            "config": {"ext_max": 2.0, "eval_extension": 0.0}}
    return checkpoint.save(d, 1, {"model": m.variables}, meta), m


@pytest.fixture()
def photo(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), img)
    return path, img


def _normalised(x):
    x = x.astype(np.float64)
    return (x - x.mean((0, 1))) / np.sqrt(x.var((0, 1)) + NORM_EPSILON)


def test_crop_at_scale_one_copies_pixels():
    img = np.random.default_rng(1).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    crop = predict.make_crop(img, np.array([30.0, 20.0, S, S]), S)
    expected = img[20:20 + S, 30:30 + S, ::-1]  # RGB
    np.testing.assert_allclose(crop, _normalised(expected), atol=1e-4)


def test_crop_at_scale_two_averages_pixel_pairs():
    # continuous convention: output pixel i samples x0 + (i + 0.5) * 2 = x0 + 2i + 1, between pixels 2i, 2i+1
    img = np.random.default_rng(2).integers(0, 255, (2 * S + 10, 2 * S + 10, 3), dtype=np.uint8).astype(np.float64)
    crop = predict.make_crop(img.astype(np.uint8), np.array([4.0, 6.0, 2 * S, 2 * S]), S)
    sub = img[6:6 + 2 * S, 4:4 + 2 * S]
    pooled = (sub[0::2, 0::2] + sub[1::2, 0::2] + sub[0::2, 1::2] + sub[1::2, 1::2]) / 4
    np.testing.assert_allclose(crop, _normalised(pooled[:, :, ::-1]), atol=1e-3)


def test_box_extension_and_clipping():
    box = predict.crop_box_for((40, 30, 60, 70), (100, 200), extension=2.0)
    np.testing.assert_allclose(box, [30, 10, 40, 80])  # centre (50, 50), 40 x 80, within the image
    box = predict.crop_box_for((0, 0, 20, 20), (100, 200), extension=2.0)
    np.testing.assert_allclose(box, [0, 0, 30, 30])  # clipped at the image border, no padding
    np.testing.assert_allclose(predict.crop_box_for(None, (100, 200), 2.0), [0, 0, 200, 100])


def test_predict_writes_json_and_png(snapshot, photo, tmp_path):
    ckpt_path, model = snapshot
    path, img = photo
    preds = predict.predict_images(model, [path], boxes=[(40, 30, 100, 110)], extension=1.5)
    p = preds[0]
    # the joints are the network's outputs decoded into the crop box
    crop = predict.make_crop(img, p.crop_box, S)
    t = model(crop[None], training=False).numpy().reshape(16, 2)
    other = model(np.roll(crop, 20, axis=1)[None], training=False).numpy().reshape(16, 2)
    assert np.abs(t - other).max() > 1e-2  # the answer depends on the crop, so a wrong crop would show
    np.testing.assert_allclose(p.joints, p.crop_box[:2] + (t + 0.5) * p.crop_box[2:], rtol=1e-5)
    # independently of make_crop: at scale 1 the network sees the box's own pixels, RGB, normalised per
    # channel; BGR, mirrored or unnormalised pixels would move the joints by far more than the tolerance
    (q,) = predict.predict_images(model, [path], boxes=[(40, 30, 40 + S, 30 + S)], extension=1.0)
    np.testing.assert_allclose(q.crop_box, [40, 30, S, S])
    rgb = img[30:30 + S, 40:40 + S, ::-1]

    def joints_of(pixels):
        out = model(pixels[None].astype(np.float32), training=False).numpy().reshape(16, 2)
        return q.crop_box[:2] + (out + 0.5) * S

    np.testing.assert_allclose(q.joints, joints_of(_normalised(rgb)), atol=1e-3)
    for wrong in (_normalised(rgb[:, :, ::-1]), _normalised(rgb[:, ::-1]), rgb):
        assert np.abs(joints_of(wrong) - q.joints).max() > 0.05
    j, png = predict.write_outputs(p, "mpii", tmp_path / "out")
    doc = json.loads(j.read_text())
    assert [d["name"] for d in doc["joints"]] == list(skeleton.MPII.joint_names)
    drawn = cv2.imread(str(png))
    h, w = img.shape[:2]  # the picture, then the legend strip below it
    assert drawn.shape[1] == w and drawn.shape[0] > h and not np.array_equal(drawn[:h], img)
    # the crop box is outlined (its left edge, half-way down, on its first column inside)
    x0, y0, w, h = (int(round(v)) for v in p.crop_box)
    assert np.abs(drawn[y0 + h // 2, x0].astype(int) - viz.CROP_COLOUR).max() < 40, drawn[y0 + h // 2, x0]


def test_predict_command(snapshot, photo, tmp_path):
    from click.testing import CliRunner

    from deeppose_fast.commands.predict import command

    ckpt_path, _ = snapshot
    path, _ = photo
    res = CliRunner().invoke(command, [str(ckpt_path), str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "photo.joints.json").is_file() and (tmp_path / "o" / "photo.pose.png").is_file()


def test_bad_inputs(snapshot, photo, tmp_path):
    from click.testing import CliRunner

    from deeppose_fast.commands.predict import command

    ckpt_path, model = snapshot
    path, _ = photo
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    with pytest.raises(predict.PredictError, match="notes.jpg: not a readable image"):
        predict.predict_images(model, [text])
    with pytest.raises(predict.PredictError, match="missing.png: no such image"):
        predict.predict_images(model, [tmp_path / "missing.png"])
    with pytest.raises(predict.PredictError, match=r"photo.png: box .* does not overlap the 160x120 image"):
        predict.predict_images(model, [path], boxes=[(170, 50, 200, 110)])
    with pytest.raises(predict.PredictError, match="x2 > x1"):
        predict.predict_images(model, [path], boxes=[(50, 50, 40, 60)])
    runner = CliRunner()
    res = runner.invoke(command, [str(tmp_path / "nope"), str(path)])
    assert res.exit_code != 0 and "no such checkpoint" in res.output
    res = runner.invoke(command, [str(ckpt_path), str(path), "--box", "1,2,3"])
    assert res.exit_code != 0 and "expected four numbers" in res.output


def _cli(*args):
    """``deeppose-fast predict ARGS`` in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from deeppose_fast.commands.predict import command

    res = CliRunner().invoke(command, [str(a) for a in args])
    return res.exit_code, res.stdout, res.stderr


def test_one_output_per_input_even_when_names_collide(snapshot, photo, tmp_path):
    ckpt_path, _ = snapshot
    path, img = photo
    inputs = [tmp_path / "a" / "person.jpg", tmp_path / "b" / "person.jpg", tmp_path / "a" / "person.png"]
    for i, p in enumerate(inputs):
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), np.roll(img, 20 * i, axis=1))  # three different pictures
    inputs += [path, path]  # a lone name, given twice
    code, out, err = _cli(ckpt_path, *inputs, "--out", tmp_path / "o")
    assert code == 0, out + err
    written = [line.split(": ", 1)[1].split(", ")[0] for line in out.splitlines()]
    assert len(set(written)) == len(inputs)  # one distinct output per input
    for image, json_path in zip(inputs, written):
        assert json.loads(Path(json_path).read_text())["image"] == str(image)
    # the documented scheme: stem; file name where stems collide; parent folders where names collide too
    names = sorted(p.name for p in (tmp_path / "o").glob("*.joints.json"))
    assert names == sorted(f"{n}.joints.json" for n in ("a__person.jpg", "b__person.jpg", "person.png", "photo",
                                                         "photo-2"))
    assert len(list((tmp_path / "o").glob("*.pose.png"))) == len(inputs)


def test_output_names_are_unique_ignoring_case(tmp_path):
    names = predict.output_names([tmp_path / "x" / "Person.jpg", tmp_path / "y" / "person.jpg"])
    assert names == ["x__Person.jpg", "y__person.jpg"]
    assert predict.output_names([tmp_path / "a.jpg", tmp_path / "b.jpg"]) == ["a", "b"]


def test_a_box_may_cross_the_image_border(snapshot, photo):
    _, model = snapshot
    path, _ = photo  # 160 x 120
    # extended about the box's own centre, then clipped: centre (150, 80), 150 x 90 -> x 75..225, y 35..125
    np.testing.assert_allclose(predict.crop_box_for((100, 50, 200, 110), (120, 160), 1.5), [75, 35, 85, 85])
    # a box holding the whole image crops the whole image
    np.testing.assert_allclose(predict.crop_box_for((-10, -20, 170, 130), (120, 160), 2.0), [0, 0, 160, 120])
    p = predict.predict_images(model, [path], boxes=[(-10, -20, 170, 130)], extension=2.0)[0]
    np.testing.assert_allclose(p.crop_box, [0, 0, 160, 120])
    assert np.isfinite(p.joints).all()


def test_a_box_barely_touching_the_image_warns(snapshot, photo, tmp_path):
    ckpt_path, model = snapshot
    path, _ = photo
    with pytest.warns(predict.PredictWarning, match=r"photo.png: box .* overlaps the 160x120 image by only 1 x 40"):
        predict.crop_box_for((159, 10, 300, 50), (120, 160), 2.0, str(path))
    code, out, err = _cli(ckpt_path, path, "--box", "159,10,300,50", "--out", tmp_path / "o")
    assert code == 0, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {path}: box") and "1 x 40 px" in lines[0], err
    code, out, err = _cli(ckpt_path, path, "--box", "170,10,300,50", "--out", tmp_path / "o")
    assert code != 0 and "does not overlap the 160x120 image" in out + err and "Traceback" not in out + err


def test_a_folder_is_named_as_a_folder(snapshot, photo, tmp_path):
    ckpt_path, _ = snapshot
    path, _ = photo
    code, out, err = _cli(ckpt_path, path, tmp_path)
    assert code != 0 and f"{tmp_path}: is a folder; give image files" in err and "Traceback" not in out + err


def test_a_bad_out_is_refused_before_the_network(photo, tmp_path):
    path, _ = photo
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    # checked before the checkpoint is even read: a missing snapshot is not what is reported
    for out_dir, why in ((blocker, "is a file"), (blocker / "sub", "cannot write outputs there")):
        code, out, err = _cli(tmp_path / "no-checkpoint", path, "--out", out_dir)
        assert code != 0 and f"{out_dir}: {why}" in err and "Traceback" not in out + err, err
    assert blocker.read_text() == "not a folder"
