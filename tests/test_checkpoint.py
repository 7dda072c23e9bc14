"""Atomic checkpoints: round trip of weights and optimiser slots, retention, and clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf

from deeppose_fast import checkpoint
from deeppose_fast import model
from deeppose_fast.specs import ModelSpec

SPEC = ModelSpec(input_size=67, width=0.25, fc_units=16, dropout=0.0)


def _tiny(seed, joints=3):
    keras.utils.set_random_seed(seed)
    m = model.build(SPEC, joints)
    opt = keras.optimizers.Adagrad(0.1, initial_accumulator_value=1e-4)
    opt.build(m.trainable_variables)
    return m, opt


def _meta(joints=3):
    return {"num_joints": joints, "skeleton": "lsp", "model": SPEC.to_dict()}


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


def test_retention_never_deletes_the_checkpoint_just_written(tmp_path):
    # an older run's higher-numbered checkpoints must not make the new one "the oldest" and delete it
    m, _ = _tiny(0)
    for step in (2000, 2500, 3000):
        checkpoint.save(tmp_path, step, {"model": m.variables}, _meta(), keep=3)
    path = checkpoint.save(tmp_path, 20, {"model": m.variables}, _meta(), keep=3)
    assert checkpoint.load(path).step == 20
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt-00000020", "ckpt-00002000", "ckpt-00002500", "ckpt-00003000"]


def test_non_finite_variables_are_never_written(tmp_path):
    m, opt = _tiny(0)
    checkpoint.save(tmp_path, 1, {"model": m.variables, "opt": opt.variables}, _meta())
    opt.variables[-1].assign(np.full(opt.variables[-1].shape, np.inf, np.float32))
    with pytest.raises(checkpoint.NonFiniteError, match=f"opt variable '{opt.variables[-1].path}'"):
        checkpoint.save(tmp_path, 2, {"model": m.variables, "opt": opt.variables}, _meta())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-00000001"]


def _dead_pid() -> int:
    """The PID of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_killed_writers_are_cleaned(tmp_path):
    m, _ = _tiny(0)
    checkpoint.save(tmp_path, 1, {"model": m.variables}, _meta())
    checkpoint.save(tmp_path, 3, {"model": m.variables}, _meta())
    dead = _dead_pid()
    # SIGKILL mid-write: a half-written folder (63 MB each for the CPU preset)
    (tmp_path / f"ckpt-00000002.tmp-{dead}").mkdir()
    (tmp_path / f"ckpt-00000002.tmp-{dead}" / "state.npz").write_bytes(b"\0" * 1000)
    # an earlier process with this very PID (containers reuse small PIDs)
    (tmp_path / f"ckpt-00000004.tmp-{os.getpid()}").mkdir()
    # SIGKILL while rewriting step 1: the old copy is superfluous, ckpt-00000001 exists
    (tmp_path / f"ckpt-00000001.old-{dead}").mkdir()
    # SIGKILL between the two renames of a rewrite of step 5: the .old copy is the only complete one
    five = checkpoint.save(tmp_path / "elsewhere", 5, {"model": m.variables}, _meta())
    five.rename(tmp_path / f"ckpt-00000005.old-{dead}")
    # SIGKILL while the retention rule deleted an old checkpoint
    (tmp_path / f"ckpt-00000000.del-{dead}").mkdir()
    # a writer that is still alive keeps its folder
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f"ckpt-00000006.tmp-{alive.pid}").mkdir()
        checkpoint.save(tmp_path, 7, {"model": m.variables}, _meta(), keep=10)
        names = sorted(p.name for p in tmp_path.iterdir() if p.name != "elsewhere")
    finally:
        alive.kill()
        alive.wait()
    assert names == ["ckpt-00000001", "ckpt-00000003", "ckpt-00000005", f"ckpt-00000006.tmp-{alive.pid}",
                     "ckpt-00000007"]
    assert checkpoint.load(tmp_path / "ckpt-00000005").step == 5
    # once the writer is gone, its folder goes too
    assert checkpoint.clean_leftovers(tmp_path) == [f"removed ckpt-00000006.tmp-{alive.pid}"]


def test_the_model_block_is_the_spec_and_older_blocks_take_defaults(tmp_path):
    m, _ = _tiny(0)
    checkpoint.save(tmp_path, 1, {"model": m.variables}, _meta())
    ck = checkpoint.load(tmp_path)
    assert ck.meta["model"] == SPEC.to_dict() and ck.model_spec == SPEC
    # a block written before ``init``, ``norm`` and ``pool5`` existed: the network those versions built
    older = {k: v for k, v in SPEC.to_dict().items() if k not in ("init", "norm", "pool5")}
    meta_file = ck.path / "meta.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "model": older}))
    again = checkpoint.load(tmp_path)
    assert again.model_spec == SPEC.replace(init="dtf", norm="lrn", pool5=True)
    x = np.random.default_rng(0).normal(size=(1, 67, 67, 3)).astype("float32")
    np.testing.assert_array_equal(checkpoint.build_model(again)(x).numpy(), m(x).numpy())


@pytest.mark.parametrize("config, extension", [({}, 2.0), ({"ext_min": 1.0, "ext_max": 1.2}, 1.2),
                                               ({"ext_max": 1.2, "ext_min": 1.0, "eval_extension": 1.5}, 1.5),
                                               ({"ext_max": 2.0, "retired_setting": 1}, 2.0)])
def test_test_extension_of_the_run(tmp_path, config, extension):
    m, _ = _tiny(0)
    checkpoint.save(tmp_path, 1, {"model": m.variables}, {**_meta(), "config": config})
    assert checkpoint.load(tmp_path).test_extension == extension
