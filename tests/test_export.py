"""SavedModel export: it serves with TensorFlow alone (deeppose_fast not importable) and agrees with the
model and with the package's own prediction."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from deeppose_fast import checkpoint, export, predict
from deeppose_fast import model as model_lib
from deeppose_fast.specs import ModelSpec

S, K = 67, 14
# He init: the reference's small truncated normals give a tiny network an output that ignores its
# input, which would let a wrong crop or normalisation pass unnoticed
SPEC = ModelSpec(input_size=S, width=0.25, fc_units=16, dropout=0.0, init="he")
_META = {"num_joints": K, "skeleton": "lsp", "model": SPEC.to_dict(), "config": {"ext_max": 2.0}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, export folder); the checkpoint lies in a run folder ``run/checkpoints`` next to the export."""
    keras.utils.set_random_seed(0)
    m = model_lib.build(SPEC, K)
    d = tmp_path_factory.mktemp("exp")
    ckpt = checkpoint.save(d / "run" / "checkpoints", 3, {"model": m.variables}, _META)
    out = export.export_savedmodel(ckpt, d / "saved")
    return m, out


SERVE = """
import sys, json
sys.modules["deeppose_fast"] = None  # prove the SavedModel needs nothing from the package
import numpy as np, tensorflow as tf
saved, crops_file, image_file, box = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
m = tf.saved_model.load(saved)
crops = np.load(crops_file)
out = m.signatures["serving_default"](images=tf.constant(crops))
img = np.load(image_file)
one = m.signatures["predict_image"](image=tf.constant(img), box=tf.constant(box, tf.float32))
np.savez(crops_file + ".out.npz", joints=out["joints"].numpy(), targets=out["targets"].numpy(),
         image_joints=one["joints"].numpy())
"""


def test_savedmodel_serves_without_the_package(exported, tmp_path):
    model, saved = exported
    meta = json.loads((saved / "deeppose_fast_export.json").read_text())
    assert meta["num_joints"] == K and meta["input_size"] == S and meta["joint_names"][13] == "head_top"
    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 255, (3, S, S, 3)).astype(np.float32)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    box = [10.0, 5.0, 80.0, 70.0]
    np.save(tmp_path / "crops.npy", crops)
    np.save(tmp_path / "image.npy", image)
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent(SERVE))
    proc = subprocess.run([sys.executable, str(script), str(saved), str(tmp_path / "crops.npy"),
                           str(tmp_path / "image.npy"), json.dumps(box)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "crops.npy.out.npz")
    # independent reference: normalise per image and channel, run the Keras model
    x = crops.astype(np.float64)
    x = (x - x.mean((1, 2), keepdims=True)) / np.sqrt(x.var((1, 2), keepdims=True) + 1.0)
    t = model(x.astype(np.float32), training=False).numpy().reshape(3, K, 2)
    assert np.abs(t - t[:1]).max() > 1e-2  # the model's answer depends on its input, so the checks below bite
    np.testing.assert_allclose(got["targets"], t, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["joints"], (t + 0.5) * S, rtol=1e-4, atol=1e-3)
    # predict_image crops like the package's OpenCV path (RGB in, BGR there); allow resampling differences
    ours = predict.make_crop(image[:, :, ::-1].copy(), np.array(box), S)
    t2 = model(ours[None], training=False).numpy().reshape(K, 2)
    expected = np.array(box[:2]) + (t2 + 0.5) * np.array(box[2:])
    np.testing.assert_allclose(got["image_joints"], expected, atol=0.5)


def test_export_refuses_a_bad_snapshot(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        export.export_savedmodel(tmp_path / "nothing", tmp_path / "out")


def _cli(args):
    """Run ``deeppose-fast export`` in-process; (exit code, output)."""
    from click.testing import CliRunner

    from deeppose_fast.commands.export import command

    res = CliRunner().invoke(command, [str(a) for a in args])
    return res.exit_code, res.output


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_overwrite_refuses_a_folder_that_is_not_an_earlier_export(exported, tmp_path):
    run = exported[1].parent / "run"
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notes.txt").write_text("keep me")
    before = {p: _tree(p) for p in (run, own)}
    for dest in (own, tmp_path / "afile"):
        (tmp_path / "afile").write_text("a file")
        with pytest.raises(export.ExportError, match=f"{dest}: .*choose another path"):
            export.export_savedmodel(run, dest, overwrite=True)
    # the run folder itself, a folder inside it, a folder holding it
    for dest, where in ((run, "is the run folder"), (run / "checkpoints", "inside the run folder"),
                        (run / "exported", "inside the run folder"), (run.parent, "holds the run folder")):
        with pytest.raises(export.ExportError, match=f"{dest}: {where} {run}"):
            export.export_savedmodel(run, dest, overwrite=True)
    code, out = _cli([run, run, "--overwrite"])
    assert code != 0 and f"{run}: is the run folder" in out and "Traceback" not in out
    assert {p: _tree(p) for p in (run, own)} == before and (own / "notes.txt").read_text() == "keep me"


def test_export_to_the_current_folder(exported, tmp_path, monkeypatch):
    run = exported[1].parent / "run"
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "data.csv").write_text("1,2")
    monkeypatch.chdir(cwd)
    for dest in (".", str(cwd)):
        code, out = _cli([run, dest, "--overwrite"])
        assert code != 0 and "Traceback" not in out and "empty name" not in out, out
        assert f"{cwd}: holds data.csv, not an earlier export" in out
    assert _tree(cwd) == ["data.csv"]
    # an empty folder (here the current one) is filled in place
    (cwd / "data.csv").unlink()
    code, out = _cli([run, "."])
    assert code == 0, out
    assert {"deeppose_fast_export.json", "saved_model.pb", "variables"} <= set(_tree(cwd))
    assert Path.cwd() == cwd and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_export_needs_overwrite_and_is_replaced_whole(exported, tmp_path):
    model, saved = exported
    run = saved.parent / "run"
    with pytest.raises(export.ExportExists, match=f"{saved}: already exists") as err:
        export.export_savedmodel(run, saved)
    assert "overwrite" not in str(err.value)  # the library does not spell the CLI's option
    code, out = _cli([run, saved])
    assert code != 0 and f"{saved}: already exists; pass --overwrite to replace an earlier export" in out
    # a second checkpoint (later step) replaces the earlier export only with --overwrite
    checkpoint.save(run / "checkpoints", 4, {"model": model.variables}, _META)
    code, out = _cli([run, saved, "--overwrite"])
    assert code == 0, out
    assert json.loads((saved / "deeppose_fast_export.json").read_text())["step"] == 4
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temporary left
