"""ImageNet initialisation of the regressor from the two AlexNet files users actually have.

- ``bvlc_alexnet.tf``: the reference's TF1 ``Saver`` checkpoint, variables ``conv1/weight``,
  ``conv1/bias`` ... ``fc7/bias`` (V1 single file, or a V2 prefix with ``.index`` and ``.data-*``).
- ``bvlc_alexnet.npy``: the Caffe-converted pickled dict, ``{"conv1": [W, b], ...}`` (the variant
  ``{"conv1": {"weights": W, "biases": b}}`` is read too).

Both hold HWIO kernels, grouped layers with half the input channels (conv2 5x5x48x256, conv4 3x3x192x384,
conv5 3x3x192x256) and fc6 as 9216x4096 in NHWC flatten order, which is exactly the Keras layout of
``model.build(ModelSpec(), K)`` (the reference network). conv1-5, fc6 and fc7 are loaded; fc8 (1000
ImageNet classes) never fits the 2K regression layer and keeps its random initialisation. Every layer's
shapes are checked before anything is assigned, so a wrong or partial file changes nothing.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import tensorflow as tf

from deeppose_fast.model import CONV_LAYERS

IMAGENET_LAYERS = CONV_LAYERS + ("fc6", "fc7")


class WeightsError(ValueError):
    """An ImageNet weight file that cannot initialise the network (names the file and layer)."""


def _tf1_checkpoint_prefix(path: Path) -> str | None:
    """The checkpoint prefix for ``path`` if it is a TF1 checkpoint (V1 file or V2 prefix)."""
    if Path(f"{path}.index").is_file():
        return str(path)
    if path.suffix == ".index" and path.is_file():
        return str(path.with_suffix(""))
    if path.is_file():
        return str(path)  # maybe a V1 single-file checkpoint; the reader decides
    return None


def read_tf1_checkpoint(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{layer: (W, b)}`` from a TF1 checkpoint holding ``<layer>/weight`` and ``<layer>/bias``."""
    path = Path(path)
    prefix = _tf1_checkpoint_prefix(path)
    if prefix is None:
        raise WeightsError(f"{path}: no such file (nor {path}.index)")
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable TensorFlow checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200]})") from None
    names = reader.get_variable_to_shape_map()
    layers = {}
    for layer in sorted({n.split("/")[0] for n in names if "/" in n}):
        w, b = f"{layer}/weight", f"{layer}/bias"
        if w in names and b in names:
            layers[layer] = (reader.get_tensor(w), reader.get_tensor(b))
    return layers


def read_npy(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{layer: (W, b)}`` from a Caffe-converted pickled ``.npy`` dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        obj = np.load(path, allow_pickle=True, encoding="latin1")
        data = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == () else obj
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise WeightsError(f"{path}: not a NumPy pickled weight dict ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a pickled dict {{layer: [W, b]}}, got {type(data).__name__}")
    layers = {}
    for layer, value in data.items():
        if isinstance(value, dict) and "weights" in value and "biases" in value:
            layers[str(layer)] = (np.asarray(value["weights"]), np.asarray(value["biases"]))
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            layers[str(layer)] = (np.asarray(value[0]), np.asarray(value[1]))
        else:
            raise WeightsError(f"{path}: layer {layer!r} is not [W, b] nor {{'weights', 'biases'}}")
    return layers


def read_imagenet(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read either format (chosen by the ``.npy`` suffix)."""
    path = Path(path)
    return read_npy(path) if path.suffix == ".npy" else read_tf1_checkpoint(path)


def load_imagenet(model, path: str | os.PathLike, layers=IMAGENET_LAYERS) -> list[str]:
    """Assign conv1-5, fc6, fc7 of ``model`` from an ImageNet AlexNet file; returns the layers loaded.

    Raises:
        WeightsError: the file is missing or unreadable, a layer is missing, or a shape differs
            (the message names the file, the layer and both shapes). Nothing is assigned then.
    """
    path = Path(path)
    data = read_imagenet(path)
    plan = []
    for name in layers:
        if name not in data:
            raise WeightsError(f"{path}: layer {name!r} is missing (the file has {sorted(data) or 'no layers'}); "
                               f"a partial or wrong file?")
        layer = model.get_layer(name)
        w, b = data[name]
        for what, value, var in (("weight", w, layer.kernel), ("bias", b, layer.bias)):
            if tuple(value.shape) != tuple(var.shape):
                raise WeightsError(f"{path}: layer {name!r} {what} has shape {tuple(value.shape)}, the network "
                                   f"expects {tuple(var.shape)} (the reference AlexNet needs width=1, "
                                   f"fc_units=4096, input_size=227)")
            if not np.all(np.isfinite(value)):
                raise WeightsError(f"{path}: layer {name!r} {what} holds NaN or infinite values")
        plan.append((layer, w, b))
    for layer, w, b in plan:
        layer.kernel.assign(w.astype(np.float32))
        layer.bias.assign(b.astype(np.float32))
    return [layer.name for layer, _, _ in plan]
