"""Checkpoint evaluation on a prepared (synthetic, MPII-format) test split under both protocols."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from deeppose_fast import checkpoint, codec, model as model_lib, scoring, skeleton
from deeppose_fast.commands.eval import command, parse_extensions
from deeppose_fast.datasets import shards as shard_format
from deeppose_fast.pipeline import dali
from deeppose_fast.specs import ModelSpec

S = 67


def make_snapshot(path, joints):
    """A checkpoint of a tiny network whose output depends on its input: He init (the reference's small
    truncated normals give a tiny network an output that ignores its input, which would let a wrong crop,
    normalisation or channel order pass unnoticed)."""
    keras.utils.set_random_seed(0)
    spec = ModelSpec(input_size=S, width=0.25, fc_units=16, dropout=0.0, init="he")
    m = model_lib.build(spec, joints)
    meta = {"num_joints": joints, "skeleton": "mpii" if joints == 16 else "lsp", "model": spec.to_dict(),
            "config": {}}
    return checkpoint.save(path, 2, {"model": m.variables}, meta), m


def normalised(x):
    """(N, S, S, 3) float32: each image and channel to zero mean and unit variance (+1 px^2), in float64."""
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    return ((x - mean) / np.sqrt(var + 1.0)).astype(np.float32)


def reference_crops(data, extension):
    """The test crops made without the pipeline: OpenCV decodes each record's JPEG, the crop box and
    targets are ``codec.crop_geometry``'s (the NumPy statement of the crop rule) and the crop is resampled
    with ``cv2.warpAffine``, in RGB order.

    Returns raw crops (N, S, S, 3) float64 0-255 (``normalised`` makes the network input), targets
    (N, K, 2), weights (N, K), crop boxes (N, 4) ``x0, y0, w, h`` and ground truth (N, K, 2, NaN = not
    annotated), both in source-image pixels."""
    images, targets, weights, boxes, gt = [], [], [], [], []
    for rec in shard_format.iter_records(data, "test"):
        bgr = cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), cv2.IMREAD_COLOR)
        g = codec.crop_geometry(rec.pose, bgr.shape[:2], codec.eval_draws(extension), size=S)
        m = codec.full_frame_matrix(g).astype(np.float64)
        m[:, 2] += 0.5 * (m[:, 0] + m[:, 1]) - 0.5  # continuous pixels -> OpenCV's (centres at integers)
        x = cv2.warpAffine(bgr[:, :, ::-1].astype(np.float32), m, (S, S), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
        images.append(x)
        targets.append(g.targets)
        weights.append(g.weights)
        offset = rec.meta[4:6]  # JPEG frame -> source image
        boxes.append(np.concatenate([g.crop_box[:2] + offset, g.crop_box[2:]]))
        gt.append(np.where(rec.pose[:, 2:3] > 0.5, rec.pose[:, :2] + offset, np.nan))
    return (np.array(images), np.array(targets), np.array(weights), np.array(boxes),
            np.array(gt))


def numpy_pose_loss(out, targets, weights):
    """DTF's loss in NumPy: per person, the squared error summed over its valid joints divided by their
    number; the mean over people."""
    per = ((out.reshape(targets.shape) - targets) ** 2).sum(-1) * weights
    return float((per.sum(1) / np.maximum(weights.sum(1), 1)).mean())


def test_score_checkpoint_sweep_and_json(synthetic_shards, tmp_path):
    data = synthetic_shards
    ckpt, model = make_snapshot(tmp_path / "ck", 16)
    out_json = tmp_path / "eval.json"
    lines = []
    doc = scoring.score_checkpoint(ckpt, data, extensions=(1.2, 2.0), batch_size=4, out_json=out_json,
                                   echo=lines.append)
    assert json.loads(out_json.read_text()) == json.loads(json.dumps(doc))
    n_test = shard_format.Manifest.read(data).count("test")
    assert [r["extension"] for r in doc["reports"]] == [1.2, 2.0]
    for r in doc["reports"]:
        assert r["num_people"] == n_test
        assert set(r["results"]) == {"dtf", "official"}
        assert r["results"]["dtf"]["metric"] == "Symmetric PCKh@0.5"
        assert "Symmetric PCKh" in r["results"]["dtf"]["tables"] and "PCP" in r["results"]["dtf"]["tables"]
        assert 0.0 <= r["headline"]["mSymmetricPCKh"] <= 1.0
    text = "\n".join(lines)
    assert "pose loss" in text and "mPCP" in text and "[official]" in text

    # The pose loss is the training loss on the test crops, recomputed here from crops made without the
    # pipeline: a crop that is not normalised, in BGR order or mirrored changes it (boxes: checked below).
    for report in doc["reports"]:
        raw, targets, weights, _, _ = reference_crops(data, report["extension"])
        expected = numpy_pose_loss(model(normalised(raw), training=False).numpy(), targets, weights)
        assert report["pose_loss"] == pytest.approx(expected, rel=1e-4), report["extension"]
        # negative control: the network answers differently to each wrong input, so the check above bites
        # (not normalised, BGR, mirrored, upside down)
        for wrong in (raw, normalised(raw[..., ::-1]), normalised(raw[:, :, ::-1]), normalised(raw[:, ::-1])):
            out = model(wrong.astype(np.float32), training=False).numpy()
            changed = numpy_pose_loss(out, targets, weights)
            assert abs(changed - expected) > 0.02 * expected

    # the predictions are the network's outputs on those crops, decoded into the source image
    preds = scoring.predict_split(model, data, extension=2.0, batch_size=4)
    raw, targets, weights, boxes, gt = reference_crops(data, 2.0)
    t = model(normalised(raw), training=False).numpy().reshape(len(raw), -1, 2)
    np.testing.assert_allclose(preds["crop_box"], boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(np.isnan(preds["gt"]), np.isnan(gt))
    np.testing.assert_allclose(preds["gt"], gt, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(preds["targets_pred"], t, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(preds["pred"], codec.decode(t, boxes), rtol=1e-3, atol=0.2)
    assert preds["pose_loss"] == pytest.approx(numpy_pose_loss(t, targets, weights), rel=1e-4)
    assert doc["reports"][1]["pose_loss"] == pytest.approx(preds["pose_loss"], rel=1e-6)


def test_a_sweep_loads_the_checkpoint_and_reads_the_manifest_once(synthetic_shards, tmp_path, monkeypatch):
    data = synthetic_shards
    ckpt, _ = make_snapshot(tmp_path / "ck", 16)
    calls = {"manifest.json reads": 0, "checkpoint loads": 0}
    read_text, load = Path.read_text, checkpoint.load

    def counting_read_text(path, *args, **kwargs):
        calls["manifest.json reads"] += path.name == shard_format.MANIFEST
        return read_text(path, *args, **kwargs)

    def counting_load(*args, **kwargs):
        calls["checkpoint loads"] += 1
        return load(*args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    monkeypatch.setattr(checkpoint, "load", counting_load)
    doc = scoring.score_checkpoint(ckpt, data, extensions=(1.0, 1.5, 2.0), batch_size=8,
                                   out_json=tmp_path / "eval.json", echo=lambda text: None)
    assert len(doc["reports"]) == 3
    assert calls == {"manifest.json reads": 1, "checkpoint loads": 1}


def test_prediction_spread():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (50, 3, 2))
    box = np.tile([0.0, 0.0, 100.0, 100.0], (50, 1))
    t_gt = gt / 100 - 0.5
    assert scoring.prediction_spread(t_gt, gt, box) == pytest.approx(1.0)
    collapsed = np.broadcast_to(t_gt.mean(0), t_gt.shape)
    assert scoring.prediction_spread(collapsed, gt, box) == pytest.approx(0.0, abs=1e-9)
    assert scoring.prediction_spread(0.5 * t_gt, gt, box) == pytest.approx(0.5)


def test_eval_command_errors(synthetic_shards, tmp_path):
    data = synthetic_shards
    runner = CliRunner()
    res = runner.invoke(command, [str(tmp_path / "missing"), "--data", str(data)])
    assert res.exit_code != 0 and "no such checkpoint" in res.output
    ckpt, _ = make_snapshot(tmp_path / "lsp", 14)
    res = runner.invoke(command, [str(ckpt), "--data", str(data), "--extensions", "2.0"])
    assert res.exit_code != 0 and "trained for 14 joints" in res.output and "16" in res.output
    bad = tmp_path / "corrupt"
    ckpt16, _ = make_snapshot(bad, 16)
    (ckpt16 / "state.npz").write_bytes(b"garbage")
    res = runner.invoke(command, [str(ckpt16), "--data", str(data)])
    assert res.exit_code != 0 and "state.npz: corrupt or truncated" in res.output
    res = runner.invoke(command, [str(ckpt16), "--data", str(data), "--extensions", "a:b"])
    assert res.exit_code != 0 and "--extensions" in res.output


def test_parse_extensions():
    assert parse_extensions("1.0:2.0:0.1") == scoring.DEFAULT_EXTENSIONS
    assert len(scoring.DEFAULT_EXTENSIONS) == 11 and scoring.DEFAULT_EXTENSIONS[-1] == 2.0
    assert parse_extensions("1.5,2") == (1.5, 2.0)
    with pytest.raises(ValueError, match="positive"):
        parse_extensions("0,1")


def test_flip_test_maps_the_mirrored_prediction_back(synthetic_shards):
    """A model whose x output is s_k * (mean of the left half - mean of the right half): mirroring the crop
    negates it, so the flip test must give ((s_k + s_perm(k)) / 2) * D, with y unchanged."""
    data = synthetic_shards
    k = 16
    scale = np.arange(1, k + 1, dtype=np.float32)
    inp = keras.Input((S, S, 3))
    d = keras.layers.Lambda(lambda x: tf.reduce_mean(x[:, :, : S // 2], axis=[1, 2, 3])
                            - tf.reduce_mean(x[:, :, S - S // 2:], axis=[1, 2, 3]))(inp)
    xy = keras.layers.Lambda(lambda v: tf.reshape(
        tf.stack([v[:, None] * scale, tf.ones_like(v[:, None] * scale) * 0.1], -1), [-1, 2 * k]))(d)
    model = keras.Model(inp, xy)
    plain = scoring.predict_split(model, data, extension=2.0, batch_size=4)
    perm = list(skeleton.MPII.flip_permutation)
    flipped = scoring.predict_split(model, data, extension=2.0, batch_size=4, flip_test=True, flip_perm=perm)
    images = np.concatenate([b["images"] for b in dali.eval_batches(data, batch_size=4, input_size=S,
                                                                    extension=2.0)])
    dd = images[:, :, : S // 2].mean((1, 2, 3)) - images[:, :, S - S // 2:].mean((1, 2, 3))
    np.testing.assert_allclose(plain["targets_pred"][..., 0], dd[:, None] * scale, rtol=1e-4, atol=1e-5)
    expected_x = dd[:, None] * (scale + scale[perm]) / 2
    np.testing.assert_allclose(flipped["targets_pred"][..., 0], expected_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flipped["targets_pred"][..., 1], 0.1, rtol=1e-5)
