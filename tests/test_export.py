"""SavedModel export: it serves with TensorFlow alone (deeppose_fast not importable) and agrees with the
model and with the package's own prediction."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from deeppose_fast import checkpoint, export, predict  # noqa: E402
from deeppose_fast.model import build_regressor  # noqa: E402

S, K = 67, 14


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    m = build_regressor(K, input_size=S, width=0.25, fc_units=16, dropout=0.0)
    d = tmp_path_factory.mktemp("exp")
    meta = {"num_joints": K, "skeleton": "lsp", "model": dict(input_size=S, width=0.25, fc_units=16, dropout=0.0),
            "config": {"ext_max": 2.0}}
    ckpt = checkpoint.save(d / "ckpts", 3, {"model": m.variables}, meta)
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
    np.testing.assert_allclose(got["targets"], t, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["joints"], (t + 0.5) * S, rtol=1e-4, atol=1e-3)
    # predict_image crops like the package's OpenCV path (RGB in, BGR there); allow resampling differences
    ours = predict.make_crop(image[:, :, ::-1].copy(), np.array(box), S)
    t2 = model(ours[None], training=False).numpy().reshape(K, 2)
    expected = np.array(box[:2]) + (t2 + 0.5) * np.array(box[2:])
    np.testing.assert_allclose(got["image_joints"], expected, atol=0.5)


def test_export_refuses_to_overwrite_and_bad_snapshot(exported, tmp_path):
    _, saved = exported
    with pytest.raises(FileExistsError):
        export.export_savedmodel(saved.parent / "ckpts", saved)
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        export.export_savedmodel(tmp_path / "nothing", tmp_path / "out")
