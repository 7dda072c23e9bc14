"""ImageNet weight import from the two formats users have, written here in exactly those formats: a TF1
Saver checkpoint (variables ``conv1/weight`` ... ``fc7/bias``) and a Caffe-converted pickled ``.npy``."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import keras
import tensorflow as tf

from deeppose_fast import weights
from deeppose_fast.model import build
from deeppose_fast.specs import ModelSpec

SHAPES = {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
          "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256), "fc6": (9216, 4096), "fc7": (4096, 4096),
          "fc8": (4096, 1000)}


@pytest.fixture(scope="module")
def imagenet():
    rng = np.random.default_rng(0)
    return {name: (rng.standard_normal(shape, dtype=np.float32) * 0.01,
                   rng.standard_normal(shape[-1:], dtype=np.float32)) for name, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build(ModelSpec(), 14)


def write_tf1_checkpoint(path, layers, version=2):
    """A TF1 ``tf.train.Saver`` checkpoint, as the reference's bvlc_alexnet.tf."""
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        for name, (w, b) in layers.items():
            with tf.compat.v1.variable_scope(name):
                # values are fed, not embedded in the graph (a 230 MB graph is slow to build)
                variables.append((tf.compat.v1.get_variable("weight", w.shape, tf.float32), w))
                variables.append((tf.compat.v1.get_variable("bias", b.shape, tf.float32), b))
        fmt = tf.compat.v1.train.SaverDef.V1 if version == 1 else tf.compat.v1.train.SaverDef.V2
        saver = tf.compat.v1.train.Saver(write_version=fmt)
        with tf.compat.v1.Session(graph=graph) as sess:
            for var, value in variables:
                var.load(value, sess)
            saver.save(sess, str(path), write_meta_graph=False)


def assert_loaded(model, layers, fc8_before):
    for name in weights.IMAGENET_LAYERS:
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), layers[name][0])
        np.testing.assert_array_equal(model.get_layer(name).bias.numpy(), layers[name][1])
    np.testing.assert_array_equal(model.get_layer("fc8").kernel.numpy(), fc8_before)  # 1000 classes: not loaded


def test_tf1_checkpoint(tmp_path, imagenet, model):
    path = tmp_path / "bvlc_alexnet.tf"
    write_tf1_checkpoint(path, imagenet)
    fc8 = model.get_layer("fc8").kernel.numpy()
    assert weights.load_imagenet(model, path) == list(weights.IMAGENET_LAYERS)
    assert_loaded(model, imagenet, fc8)


def test_caffe_npy_list_and_dict_variants(tmp_path, imagenet, model):
    path = tmp_path / "bvlc_alexnet.npy"
    with open(path, "wb") as f:  # np.save of a dict pickles it, as the converter did
        np.save(f, {k: [w, b] for k, (w, b) in imagenet.items()}, allow_pickle=True)
    fc8 = model.get_layer("fc8").kernel.numpy()
    weights.load_imagenet(model, path)
    assert_loaded(model, imagenet, fc8)
    shifted = {k: (w + 1, b + 1) for k, (w, b) in imagenet.items()}
    path2 = tmp_path / "dtf_style.npy"
    with open(path2, "wb") as f:
        np.save(f, {k: {"weights": w, "biases": b} for k, (w, b) in shifted.items()}, allow_pickle=True)
    weights.load_imagenet(model, path2)
    assert_loaded(model, shifted, fc8)


def test_wrong_shape_names_the_layer_and_changes_nothing(tmp_path, imagenet, model):
    bad = dict(imagenet)
    bad["conv4"] = (np.zeros((3, 3, 384, 384), np.float32), imagenet["conv4"][1])  # ungrouped layout
    path = tmp_path / "bad.npy"
    with open(path, "wb") as f:
        np.save(f, {k: [w, b] for k, (w, b) in bad.items()}, allow_pickle=True)
    before = model.get_layer("conv1").kernel.numpy().copy()
    with pytest.raises(weights.WeightsError, match=r"bad.npy: layer 'conv4' weight has shape \(3, 3, 384, 384\)"):
        weights.load_imagenet(model, path)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_partial_checkpoint_names_the_missing_layer(tmp_path, imagenet, model):
    path = tmp_path / "partial.tf"
    write_tf1_checkpoint(path, {k: v for k, v in imagenet.items() if k in ("conv1", "conv2", "conv3")})
    with pytest.raises(weights.WeightsError, match="partial.tf: layer 'conv4' is missing"):
        weights.load_imagenet(model, path)


def test_reduced_network_refuses_imagenet_weights(tmp_path, imagenet):
    path = tmp_path / "w.npy"
    with open(path, "wb") as f:
        np.save(f, {k: [w, b] for k, (w, b) in imagenet.items()}, allow_pickle=True)
    small = build(ModelSpec(input_size=113, width=0.5, fc_units=64), 14)
    with pytest.raises(weights.WeightsError, match="layer 'conv1' weight has shape"):
        weights.load_imagenet(small, path)


def test_unreadable_files(tmp_path, model):
    junk = tmp_path / "junk.tf"
    junk.write_bytes(b"\x00\x01 not a checkpoint" * 10)
    with pytest.raises(weights.WeightsError, match="junk.tf: not a readable TensorFlow checkpoint"):
        weights.load_imagenet(model, junk)
    with pytest.raises(weights.WeightsError, match="missing.npy: no such file"):
        weights.load_imagenet(model, tmp_path / "missing.npy")
    notdict = tmp_path / "list.npy"
    np.save(notdict, np.arange(3))
    with pytest.raises(weights.WeightsError, match="list.npy: expected a pickled dict"):
        weights.load_imagenet(model, notdict)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(pickle.dumps("x")[:3])
    with pytest.raises(weights.WeightsError, match="garbage.npy"):
        weights.load_imagenet(model, garbage)
