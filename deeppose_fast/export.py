"""Export a checkpoint to a TensorFlow SavedModel that serves without this package (TF alone).

Signatures (S input size, K joints, B batch):
- ``serving_default`` / ``predict_crops``: ``images`` uint8 or float (B, S, S, 3) RGB crops ->
  ``joints`` (B, K, 2) in crop pixels (continuous convention) and ``targets`` (B, K, 2) (``p / S - 0.5``).
  The per-image, per-channel normalisation of the training pipeline is part of the graph.
- ``predict_image``: ``image`` uint8 (H, W, 3) RGB and ``box`` float32 (4,) ``x0, y0, w, h`` (the crop
  region, e.g. a person box extended by the test extension) -> ``joints`` (K, 2) in image pixels.

``deeppose_fast_export.json`` next to ``saved_model.pb`` records the joint names, skeleton, input size and
the test extension the network was trained for.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

NORM_EPSILON = 1.0  # as the training pipeline's fn.normalize


def _normalise(images):
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    mean, var = tf.nn.moments(x, axes=[1, 2], keepdims=True)
    return (x - mean) / tf.sqrt(var + NORM_EPSILON)


def build_module(model, size: int, num_joints: int):
    import tensorflow as tf

    class PoseServing(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
        def predict_crops(self, images):
            t = tf.reshape(self.model(_normalise(images), training=False), [-1, num_joints, 2])
            return {"targets": t, "joints": (t + 0.5) * float(size)}

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                                      tf.TensorSpec([4], tf.float32, name="box")])
        def predict_image(self, image, box):
            h = tf.cast(tf.shape(image)[0], tf.float32)
            w = tf.cast(tf.shape(image)[1], tf.float32)
            x0, y0, bw, bh = box[0], box[1], box[2], box[3]
            s = float(size)
            # crop_and_resize samples at index coordinates y1n*(H-1) + i*(y2n-y1n)*(H-1)/(S-1); the
            # continuous-pixel crop samples at y0 + (i + 0.5) * bh / S, i.e. index y0 + (i+.5) bh/S - .5.
            y1 = (y0 + 0.5 * bh / s - 0.5) / tf.maximum(h - 1.0, 1.0)
            y2 = (y0 + (s - 0.5) * bh / s - 0.5) / tf.maximum(h - 1.0, 1.0)
            x1 = (x0 + 0.5 * bw / s - 0.5) / tf.maximum(w - 1.0, 1.0)
            x2 = (x0 + (s - 0.5) * bw / s - 0.5) / tf.maximum(w - 1.0, 1.0)
            crop = tf.image.crop_and_resize(tf.cast(image[None], tf.float32), [[y1, x1, y2, x2]], [0],
                                            [size, size], method="bilinear")
            t = tf.reshape(self.model(_normalise(crop), training=False), [num_joints, 2])
            return {"joints": tf.stack([x0, y0]) + (t + 0.5) * tf.stack([bw, bh])}

    return PoseServing()


def export_savedmodel(snapshot, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a SavedModel of ``snapshot`` (checkpoint or run folder) to ``out_dir`` (atomically)."""
    import tensorflow as tf

    from deeppose_fast import checkpoint
    from deeppose_fast import skeleton as skeletons

    ckpt = checkpoint.load(snapshot)
    # Split grouped convolutions serve on any device.
    model = checkpoint.build_model(ckpt, split_groups=True)
    size, k = int(ckpt.model_settings["input_size"]), ckpt.num_joints
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True / --overwrite)")
    module = build_module(model, size, k)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.predict_crops,
                                                      "predict_crops": module.predict_crops,
                                                      "predict_image": module.predict_image})
    sk_name = ckpt.meta.get("skeleton")
    names = list(skeletons.get(sk_name).joint_names) if sk_name in skeletons.SKELETONS else None
    cfg = ckpt.meta.get("config", {})
    ext = cfg.get("eval_extension") or cfg.get("ext_max")
    (tmp / "deeppose_fast_export.json").write_text(json.dumps(
        {"checkpoint": str(ckpt.path), "step": ckpt.step, "skeleton": sk_name, "joint_names": names,
         "num_joints": k, "input_size": size, "test_extension": ext,
         "pixel_convention": "continuous (pixel i covers [i, i+1))"}, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
