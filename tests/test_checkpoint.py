"""Atomic checkpoints: round trip of weights and optimiser slots, retention, and clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from deeppose_fast import checkpoint  # noqa: E402
from deeppose_fast.model import build_regressor  # noqa: E402

SETTINGS = dict(input_size=67, width=0.25, fc_units=16, dropout=0.0)


def _tiny(seed, joints=3):
    keras.utils.set_random_seed(seed)
    m = build_regressor(joints, **SETTINGS)
    opt = keras.optimizers.Adagrad(0.1, initial_accumulator_value=1e-4)
    opt.build(m.trainable_variables)
    return m, opt


def _meta(joints=3):
    return {"num_joints": joints, "skeleton": "lsp", "model": dict(SETTINGS)}


def test_round_trip_weights_and_slots(tmp_path):
    m, opt = _tiny(0)
    # make the slots non-trivial
    x = np.random.default_rng(0).normal(size=(2, 67, 67, 3)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(m(x) ** 2)
    opt.apply_gradients(zip(tape.gradient(loss, m.trainable_variables), m.trainable_variables))
    path = checkpoint.save(tmp_path, 7, {"model": m.variables, "opt": opt.variables}, _meta())
    assert path.name == "ckpt-00000007"

    m2, opt2 = _tiny(1)
    ck = checkpoint.load(tmp_path)  # a folder of checkpoints resolves to the newest
    assert ck.step == 7 and ck.num_joints == 3
    checkpoint.assign(ck, "model", m2.variables)
    checkpoint.assign(ck, "opt", opt2.variables)
    for a, b in zip(m.variables + opt.variables, m2.variables + opt2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    rebuilt = checkpoint.build_model(ck)
    np.testing.assert_allclose(rebuilt(x).numpy(), m(x).numpy(), rtol=1e-6)


def test_keeps_the_newest_and_ignores_partial_writes(tmp_path):
    m, _ = _tiny(0)
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, step, {"model": m.variables}, _meta(), keep=2)
    (tmp_path / "ckpt-00000009.tmp-123").mkdir()  # a writer that died before its rename
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["ckpt-00000003", "ckpt-00000004"]
    assert checkpoint.resolve(tmp_path).name == "ckpt-00000004"
    assert checkpoint.resolve(tmp_path.parent / tmp_path.name).name == "ckpt-00000004"


def test_rewriting_the_same_step_replaces_it(tmp_path):
    m, _ = _tiny(0)
    checkpoint.save(tmp_path, 5, {"model": m.variables}, _meta())
    m.get_layer("fc8").bias.assign(np.full(6, 3.0, np.float32))
    checkpoint.save(tmp_path, 5, {"model": m.variables}, _meta())
    ck = checkpoint.load(tmp_path / "ckpt-00000005")
    assert float(checkpoint.build_model(ck).get_layer("fc8").bias.numpy()[0]) == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-00000005"]


def test_missing_snapshot(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "nope")
    with pytest.raises(checkpoint.CheckpointError, match="holds no checkpoint"):
        checkpoint.load(tmp_path)


def test_corrupt_snapshot(tmp_path):
    m, _ = _tiny(0)
    path = checkpoint.save(tmp_path, 1, {"model": m.variables}, _meta())
    state = path / "state.npz"
    state.write_bytes(state.read_bytes()[:1000])  # truncated
    with pytest.raises(checkpoint.CheckpointError, match="state.npz: corrupt or truncated"):
        checkpoint.load(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="meta.json: corrupt JSON"):
        checkpoint.load(path)
    (path / "meta.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(checkpoint.CheckpointError, match="not a deeppose-fast checkpoint"):
        checkpoint.load(path)
    (path / "meta.json").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="meta.json: missing"):
        checkpoint.load(path)


def test_other_joint_count_is_refused(tmp_path):
    m, _ = _tiny(0, joints=3)
    path = checkpoint.save(tmp_path, 1, {"model": m.variables}, _meta(3))
    ck = checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match="trained for 3 joints.*data has 16"):
        checkpoint.build_model(ck, expect_joints=16)
    other, _ = _tiny(0, joints=16)
    with pytest.raises(checkpoint.CheckpointError, match="fc8"):
        checkpoint.assign(ck, "model", other.variables)
