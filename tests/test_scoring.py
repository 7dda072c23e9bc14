"""Checkpoint evaluation on a prepared (synthetic, MPII-format) test split under both protocols."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from deeppose_fast import checkpoint, scoring  # noqa: E402
from deeppose_fast.commands.eval import parse_extensions  # noqa: E402
from deeppose_fast.model import build_regressor  # noqa: E402

S = 67


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from deeppose_fast.datasets import DatasetWarning
    from deeppose_fast.datasets.prepare import prepare

    out = tmp_path_factory.mktemp("synthetic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        manifest = prepare("synthetic", out, num_images=24, workers=1, progress=False)
    return out, manifest


def make_snapshot(path, joints):
    keras.utils.set_random_seed(0)
    m = build_regressor(joints, input_size=S, width=0.25, fc_units=16, dropout=0.0)
    meta = {"num_joints": joints, "skeleton": "mpii" if joints == 16 else "lsp",
            "model": dict(input_size=S, width=0.25, fc_units=16, dropout=0.0), "config": {}}
    return checkpoint.save(path, 2, {"model": m.variables}, meta), m


def test_score_checkpoint_sweep_and_json(shards, tmp_path):
    data, manifest = shards
    ckpt, model = make_snapshot(tmp_path / "ck", 16)
    out_json = tmp_path / "eval.json"
    lines = []
    doc = scoring.score_checkpoint(ckpt, data, extensions=(1.2, 2.0), batch_size=4, out_json=out_json,
                                       echo=lines.append)
    assert json.loads(out_json.read_text()) == json.loads(json.dumps(doc))
    n_test = manifest["splits"]["test"]["count"]
    assert [r["extension"] for r in doc["reports"]] == [1.2, 2.0]
    for r in doc["reports"]:
        assert r["num_people"] == n_test
        assert set(r["results"]) == {"dtf", "official"}
        assert r["results"]["dtf"]["metric"] == "Symmetric PCKh@0.5"
        assert "Symmetric PCKh" in r["results"]["dtf"]["tables"] and "PCP" in r["results"]["dtf"]["tables"]
        assert 0.0 <= r["headline"]["mSymmetricPCKh"] <= 1.0
    text = "\n".join(lines)
    assert "pose loss" in text and "mPCP" in text and "[official]" in text

    # the pose loss is the training loss on the test crops, recomputed here with NumPy
    from deeppose_fast.pipeline import dali
    preds = scoring.predict_split(model, data, extension=2.0, batch_size=4)
    total, n = 0.0, 0
    for b in dali.eval_batches(data, batch_size=4, input_size=S, extension=2.0):
        out = model(b["images"], training=False).numpy().reshape(len(b["images"]), -1, 2)
        w = b["weights"]
        per = ((out - b["targets"]) ** 2).sum(-1) * w
        total += (per.sum(1) / np.maximum(w.sum(1), 1)).sum()
        n += len(w)
    assert preds["pose_loss"] == pytest.approx(total / n, rel=1e-4)
    assert doc["reports"][1]["pose_loss"] == pytest.approx(total / n, rel=1e-4)


def test_prediction_spread():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, (50, 3, 2))
    box = np.tile([0.0, 0.0, 100.0, 100.0], (50, 1))
    t_gt = gt / 100 - 0.5
    assert scoring.prediction_spread(t_gt, gt, box) == pytest.approx(1.0)
    collapsed = np.broadcast_to(t_gt.mean(0), t_gt.shape)
    assert scoring.prediction_spread(collapsed, gt, box) == pytest.approx(0.0, abs=1e-9)
    assert scoring.prediction_spread(0.5 * t_gt, gt, box) == pytest.approx(0.5)


def test_eval_command_errors(shards, tmp_path):
    from click.testing import CliRunner

    from deeppose_fast.commands.eval import command

    data, _ = shards
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


def test_flip_test_maps_the_mirrored_prediction_back(shards):
    """A model whose x output is s_k * (mean of the left half - mean of the right half): mirroring the crop
    negates it, so the flip test must give ((s_k + s_perm(k)) / 2) * D, with y unchanged."""
    from deeppose_fast import skeleton
    from deeppose_fast.pipeline import dali

    data, _ = shards
    k = 16
    scale = np.arange(1, k + 1, dtype=np.float32)
    inp = keras.Input((S, S, 3))
    d = keras.layers.Lambda(lambda x: tf.reduce_mean(x[:, :, : S // 2], axis=[1, 2, 3])
                            - tf.reduce_mean(x[:, :, S - S // 2:], axis=[1, 2, 3]))(inp)
    xy = keras.layers.Lambda(lambda v: tf.reshape(tf.stack([v[:, None] * scale, tf.ones_like(v[:, None] * scale) * 0.1], -1),
                                                  [-1, 2 * k]))(d)
    model = keras.Model(inp, xy)
    plain = scoring.predict_split(model, data, extension=2.0, batch_size=4)
    perm = list(skeleton.MPII.flip_permutation)
    flipped = scoring.predict_split(model, data, extension=2.0, batch_size=4, flip_test=True, flip_perm=perm)
    images = np.concatenate([b["images"] for b in dali.eval_batches(data, batch_size=4, input_size=S, extension=2.0)])
    dd = images[:, :, : S // 2].mean((1, 2, 3)) - images[:, :, S - S // 2:].mean((1, 2, 3))
    np.testing.assert_allclose(plain["targets_pred"][..., 0], dd[:, None] * scale, rtol=1e-4, atol=1e-5)
    expected_x = dd[:, None] * (scale + scale[perm]) / 2
    np.testing.assert_allclose(flipped["targets_pred"][..., 0], expected_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flipped["targets_pred"][..., 1], 0.1, rtol=1e-5)
