"""Export a checkpoint to a TensorFlow SavedModel that serves without this package (TF alone).

Signatures (S input size, K joints, B batch):
- ``serving_default`` / ``predict_crops``: ``images`` uint8 or float (B, S, S, 3) RGB crops ->
  ``joints`` (B, K, 2) in crop pixels (continuous convention) and ``targets`` (B, K, 2) (``p / S - 0.5``).
  The per-image, per-channel normalisation of the training pipeline is part of the graph
  (``pipeline.contract.normalize_tf``).
- ``predict_image``: ``image`` uint8 (H, W, 3) RGB and ``box`` float32 (4,) ``x0, y0, w, h`` (the crop
  region, e.g. a person box extended by the test extension) -> ``joints`` (K, 2) in image pixels.

A cascade stage's snapshot exports the whole cascade (``cascade.links.chain``): both signatures then run
every later stage after stage 1 (``refine_tf``: a crop about each joint, from the image given; for
``predict_crops`` the person crop is that image). ``deeppose_fast_export.json`` next to ``saved_model.pb``
records the joint names, skeleton, input size, the test extension the network was trained for and the
cascade's stages.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import tensorflow as tf

from deeppose_fast import checkpoint
from deeppose_fast import model as model_lib
from deeppose_fast import skeleton as skeletons
from deeppose_fast.cascade import links
from deeppose_fast.pipeline.contract import normalize_tf


def sample_crops(image: tf.Tensor, boxes: tf.Tensor, size: int) -> tf.Tensor:
    """(N, S, S, 3) float32 bilinear crops of the (H, W, 3) ``image`` over ``boxes`` (N, 4) ``x0, y0, w, h``
    (continuous pixels: output pixel ``i`` samples ``x0 + (i + 0.5) w / S``), border pixels repeated
    outside the image, as the pipeline's warp makes a cascade stage's joint crops."""
    image = tf.cast(image, tf.float32)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    grid = (tf.range(size, dtype=tf.float32) + 0.5) / float(size)  # (S,)
    xs = boxes[:, 0:1] + grid[None] * boxes[:, 2:3] - 0.5  # (N, S) index coordinates
    ys = boxes[:, 1:2] + grid[None] * boxes[:, 3:4] - 0.5

    def corners(v, n):
        lo = tf.floor(v)
        frac = v - lo
        lo = tf.cast(lo, tf.int32)
        return tf.clip_by_value(lo, 0, n - 1), tf.clip_by_value(lo + 1, 0, n - 1), frac

    x0, x1, fx = corners(xs, w)
    y0, y1, fy = corners(ys, h)

    def at(yi, xi):  # (N, S, S, 3): image[yi[n, r], xi[n, c]]
        idx = tf.stack([tf.broadcast_to(yi[:, :, None], [tf.shape(yi)[0], size, size]),
                        tf.broadcast_to(xi[:, None, :], [tf.shape(xi)[0], size, size])], axis=-1)
        return tf.gather_nd(image, idx)

    fx, fy = fx[:, None, :, None], fy[:, :, None, None]
    top = at(y0, x0) * (1 - fx) + at(y0, x1) * fx
    bottom = at(y1, x0) * (1 - fx) + at(y1, x1) * fx
    return top * (1 - fy) + bottom * fy


def refine_tf(model, image: tf.Tensor, joints: tf.Tensor, *, sigma: float, size: int, num_joints: int,
              diagonals) -> tf.Tensor:
    """One cascade stage in TensorFlow (``predict.refine_images``' rule): (K, 2) joints in ``image``'s
    pixels re-estimated from a crop about each, of side ``sigma`` times the torso diameter (the mean
    length of the torso ``diagonals``, index pairs) of ``joints``."""
    a, b = [p[0] for p in diagonals], [p[1] for p in diagonals]
    diam = tf.reduce_mean(tf.norm(tf.gather(joints, a) - tf.gather(joints, b), axis=-1))
    side = tf.maximum(sigma * diam, 1.0)
    boxes = tf.concat([joints - 0.5 * side, tf.fill([num_joints, 2], side)], axis=1)  # (K, 4)
    crops = normalize_tf(sample_crops(image, boxes, size))
    t = tf.reshape(model(model_lib.model_inputs(model, crops, tf.range(num_joints, dtype=tf.int32)), training=False),
                   [num_joints, num_joints, 2])
    own = tf.linalg.diag_part(tf.transpose(t, [2, 0, 1]))  # (2, K): pair k of crop k
    return boxes[:, :2] + (tf.transpose(own) + 0.5) * side


def build_module(model, size: int, num_joints: int, stages=(), diagonals=()):
    """The ``tf.Module`` serving ``model`` (S = ``size``, K = ``num_joints``) with the signatures of the
    module docstring. ``stages``: a cascade's later stages, ``(model, sigma)`` each, run after ``model``
    in both signatures (``refine_tf``; ``diagonals``: the skeleton's torso diagonals)."""
    class PoseServing(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.stage_models = [m for m, _ in stages]

        def refine(self, image, joints):
            for m, (_, sigma) in zip(self.stage_models, stages):
                joints = refine_tf(m, image, joints, sigma=sigma, size=size, num_joints=num_joints,
                                   diagonals=diagonals)
            return joints

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
        def predict_crops(self, images):
            t = tf.reshape(self.model(normalize_tf(images), training=False), [-1, num_joints, 2])
            joints = (t + 0.5) * float(size)
            if stages:  # the cascade inside each person crop
                joints = tf.map_fn(lambda x: self.refine(x[0], x[1]), (images, joints),
                                   fn_output_signature=tf.float32)
                t = joints / float(size) - 0.5
            return {"targets": t, "joints": joints}

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
            t = tf.reshape(self.model(normalize_tf(crop), training=False), [num_joints, 2])
            return {"joints": self.refine(image, tf.stack([x0, y0]) + (t + 0.5) * tf.stack([bw, bh]))}

    return PoseServing()


class ExportError(ValueError):
    """A destination the export may not use (names the path and why)."""


class ExportExists(ExportError):
    """The destination holds an earlier export and replacing it was not asked for."""


MARKER = "deeppose_fast_export.json"
# What a complete export holds at its top level (TensorFlow's SavedModel entries and our marker): a folder
# holding anything else is not an earlier export, and is never replaced.
EXPORT_ENTRIES = frozenset({MARKER, "saved_model.pb", "fingerprint.pb", "variables", "assets"})


def is_export(path: Path) -> bool:
    """True when ``path`` is a folder this module wrote: the marker, ``saved_model.pb``, nothing foreign."""
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    return {MARKER, "saved_model.pb"} <= names <= EXPORT_ENTRIES


def protected_folders(snapshot: str | os.PathLike) -> dict[Path, str]:
    """The folders an export must not be, hold or lie inside (resolved path -> what it is): the run folder
    of the snapshot's checkpoint (when it lies in a run's ``checkpoints`` folder) and the snapshot itself."""
    ckpt = checkpoint.resolve(snapshot).resolve()
    folders = {}
    if ckpt.parent.name == "checkpoints":
        folders[ckpt.parent.parent] = "the run folder"
    folders.setdefault(Path(snapshot).resolve(), "the checkpoint folder")
    return folders


def _relation(dest: Path, folder: Path) -> str | None:
    """How ``dest`` overlaps ``folder`` ("is", "inside", "holds"), None when apart."""
    if dest == folder:
        return "is"
    if folder in dest.parents:
        return "inside"
    if dest in folder.parents:
        return "holds"
    return None


def check_destination(dest: Path, protected: dict[Path, str], overwrite: bool) -> None:
    """Refuse a destination the export would damage (``dest`` resolved; ``protected`` as from
    ``protected_folders``).

    Allowed: a path that does not exist, an empty folder (filled in place), or, with ``overwrite``, an
    earlier export (``is_export``). Refused whatever ``overwrite`` says: a path that is, holds or lies
    inside a protected folder, a file, a folder holding anything else.
    """
    for folder, what in protected.items():
        rel = _relation(dest, folder)
        if rel is not None:
            raise ExportError(f"{dest}: {rel} {what} {folder}; choose a path outside it")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ExportError(f"{dest}: is a file, not an earlier export; choose another path")
    if is_export(dest):
        if not overwrite:
            raise ExportExists(f"{dest}: already exists")
        return
    names = sorted(p.name for p in dest.iterdir())
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise ExportError(f"{dest}: holds {shown}, not an earlier export; choose another path")


def _swap_in(tmp: Path, dest: Path) -> None:
    """Put the complete export ``tmp`` at ``dest``; the earlier one (if any) goes only once it is replaced.

    An empty existing folder is filled in place (it may be the current directory, which must not be swapped
    for another inode), with the marker moved last so an interrupted fill is never taken for an export.
    """
    if dest.is_dir() and not any(dest.iterdir()):
        for entry in sorted(tmp.iterdir(), key=lambda p: p.name == MARKER):
            entry.rename(dest / entry.name)
        tmp.rmdir()
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)  # our own leftover, by its name
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def export_savedmodel(snapshot, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a SavedModel of ``snapshot`` (checkpoint or run folder) to ``out_dir``; returns its resolved path.

    ``out_dir`` must not exist, be an empty folder, or (with ``overwrite``) be an earlier export; it may not
    be, hold or lie inside the checkpoint or its run folder (``check_destination``). The export is written
    beside it and moved into place only when complete. Raises ``ExportExists``, ``ExportError`` (destination)
    or ``checkpoint.CheckpointError`` (snapshot), before any work is done.
    """
    out_dir = Path(out_dir).resolve()  # "." has no name to put a temporary folder beside
    check_destination(out_dir, protected_folders(snapshot), overwrite)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{out_dir}: cannot create its folder ({e.strerror}); choose another path") from None
    if not os.access(out_dir.parent, os.W_OK):
        raise ExportError(f"{out_dir}: its folder {out_dir.parent} is not writable; choose another path")
    chain = links.chain(snapshot)  # a cascade stage's snapshot exports the whole cascade
    ckpt = chain[-1].ckpt
    # Split grouped convolutions serve on any device.
    first, *later = [checkpoint.build_model(s.ckpt, split_groups=True) for s in chain]
    size, k = chain[0].ckpt.model_spec.input_size, ckpt.num_joints
    sk_name = ckpt.meta.get("skeleton")
    if later and any(s.ckpt.model_spec.input_size != size for s in chain):
        raise ExportError(f"{ckpt.path}: the cascade's stages take different input sizes; export needs one")
    diagonals = skeletons.get(sk_name).torso_diagonals if later else ()
    module = build_module(first, size, k, [(m, s.sigma) for m, s in zip(later, chain[1:])], diagonals)
    names = list(skeletons.get(sk_name).joint_names) if sk_name in skeletons.SKELETONS else None
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover, by its name
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.predict_crops,
                                                          "predict_crops": module.predict_crops,
                                                          "predict_image": module.predict_image})
        (tmp / MARKER).write_text(json.dumps(
            {"checkpoint": str(ckpt.path), "step": ckpt.step, "skeleton": sk_name, "joint_names": names,
             "num_joints": k, "input_size": size, "test_extension": chain[0].ckpt.test_extension,
             "cascade": [{"stage": s.stage, "checkpoint": str(s.ckpt.path), "step": s.ckpt.step,
                          "sigma": s.sigma} for s in chain],
             "pixel_convention": "continuous (pixel i covers [i, i+1))"}, indent=2))
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless something failed
    return out_dir
