"""Prediction on one's own images: the crop geometry, outputs, and clear errors on bad input."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from deeppose_fast import checkpoint, predict, skeleton  # noqa: E402
from deeppose_fast.model import build_regressor  # noqa: E402

S = 67


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    keras.utils.set_random_seed(0)
    m = build_regressor(16, input_size=S, width=0.25, fc_units=16, dropout=0.0)
    d = tmp_path_factory.mktemp("ckpt")
    meta = {"num_joints": 16, "skeleton": "mpii", "model": dict(input_size=S, width=0.25, fc_units=16, dropout=0.0),
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
    return (x - x.mean((0, 1))) / np.sqrt(x.var((0, 1)) + predict.NORM_EPSILON)


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
    np.testing.assert_allclose(p.joints, p.crop_box[:2] + (t + 0.5) * p.crop_box[2:], rtol=1e-5)
    j, png = predict.write_outputs(p, "mpii", tmp_path / "out")
    doc = json.loads(j.read_text())
    assert [d["name"] for d in doc["joints"]] == list(skeleton.MPII.joint_names)
    drawn = cv2.imread(str(png))
    assert drawn.shape == img.shape and not np.array_equal(drawn, img)


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
    with pytest.raises(predict.PredictError, match=r"photo.png: box .* outside the 160x120 image"):
        predict.predict_images(model, [path], boxes=[(100, 50, 200, 110)])
    with pytest.raises(predict.PredictError, match="x2 > x1"):
        predict.predict_images(model, [path], boxes=[(50, 50, 40, 60)])
    runner = CliRunner()
    res = runner.invoke(command, [str(tmp_path / "nope"), str(path)])
    assert res.exit_code != 0 and "no such checkpoint" in res.output
    res = runner.invoke(command, [str(ckpt_path), str(path), "--box", "1,2,3"])
    assert res.exit_code != 0 and "expected four numbers" in res.output
