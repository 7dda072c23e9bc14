"""The AlexNet regressor: reference layer shapes, grouped convolutions, LRN, initialisation, the loss."""
from __future__ import annotations

import numpy as np
import pytest

import keras
import tensorflow as tf

from deeppose_fast import model as M
from deeppose_fast.specs import ModelSpec

tf.config.threading.set_intra_op_parallelism_threads(2)


@pytest.fixture(scope="module")
def reference():
    keras.utils.set_random_seed(0)
    return M.build(ModelSpec(), 14)


def test_reference_layer_shapes(reference):
    # The shapes of DTF's bvlc_alexnet.tf variables (REFERENCE.md), HWIO, grouped layers half the inputs.
    expected = {"conv1": (11, 11, 3, 96), "conv2": (5, 5, 48, 256), "conv3": (3, 3, 256, 384),
                "conv4": (3, 3, 192, 384), "conv5": (3, 3, 192, 256), "fc6": (9216, 4096),
                "fc7": (4096, 4096), "fc8": (4096, 28)}
    for name, shape in expected.items():
        layer = reference.get_layer(name)
        assert tuple(layer.kernel.shape) == shape, name
        assert tuple(layer.bias.shape) == (shape[-1],), name
    # 227 -> SAME/4 -> 57 -> pool 28 -> pool 13 -> pool 6: 6 * 6 * 256 = 9216
    assert reference.get_layer("pool5").output.shape[1:] == (6, 6, 256)
    assert reference.output.shape[1:] == (28,)
    # about 57M parameters (PERFORMANCE.md)
    assert 56e6 < reference.count_params() < 58.5e6


def test_reference_initialisation(reference):
    biases = {"conv1": 0.0, "conv2": 0.1, "conv3": 0.0, "conv4": 0.1, "conv5": 0.1, "fc6": 0.1, "fc7": 0.1,
              "fc8": 0.0}
    stds = {"conv3": 0.01, "fc6": 0.005, "fc7": 0.005}
    for name, b in biases.items():
        np.testing.assert_array_equal(reference.get_layer(name).bias.numpy(), np.float32(b))
    for name, std in stds.items():
        w = reference.get_layer(name).kernel.numpy()
        # a normal truncated at 2 sigma has std 0.880 sigma and nothing beyond 2 sigma
        assert abs(w.std() / std - 0.880) < 0.02, name
        assert np.abs(w).max() <= 2 * std + 1e-9
        assert abs(w.mean()) < 0.05 * std


def test_output_and_variable_split():
    keras.utils.set_random_seed(1)
    m = M.build(ModelSpec(input_size=67, width=0.25, fc_units=32, dropout=0.0), 16)
    out = m(np.random.rand(3, 67, 67, 3).astype("float32"))
    assert out.shape == (3, 32)
    conv, fc = M.split_variables(m)
    assert len(conv) == 10 and len(fc) == 6


def test_a_joint_conditioned_network_regresses_the_joint_it_is_given():
    """Against the fc layers computed in NumPy from the flattened features: each joint's own biases in fc6
    and fc7, fc8's two outputs in the joint's pair and nothing elsewhere."""
    keras.utils.set_random_seed(2)
    spec = ModelSpec(input_size=67, width=0.25, fc_units=16, dropout=0.0, joint_input=True)
    m = M.build(spec, 5)
    assert M.takes_joint(m) and M.input_size(m) == 67 and m.output.shape[1:] == (10,)
    rng = np.random.default_rng(0)
    for name in M.JOINT_LAYERS:  # zero at start: give them values that matter
        layer = m.get_layer(name)
        layer.embeddings.assign(rng.normal(0, 0.5, layer.embeddings.shape).astype("float32"))
    x = rng.random((4, 67, 67, 3)).astype("float32")
    joints = np.array([0, 3, 3, 4], np.int32)
    got = m(M.model_inputs(m, x, joints), training=False).numpy().reshape(4, 5, 2)

    flat = keras.Model(m.inputs[0], m.get_layer("flatten").output)(x).numpy().astype(np.float64)
    w = {n: [v.numpy().astype(np.float64) for v in m.get_layer(n).weights] for n in ("fc6", "fc7", "fc8")}
    e6, e7 = (m.get_layer(n).embeddings.numpy() for n in M.JOINT_LAYERS)
    h = np.maximum(flat @ w["fc6"][0] + w["fc6"][1] + e6[joints], 0)
    h = np.maximum(h @ w["fc7"][0] + w["fc7"][1] + e7[joints], 0)
    own = h @ w["fc8"][0] + w["fc8"][1]  # (4, 2)
    want = np.zeros((4, 5, 2))
    want[np.arange(4), joints] = own
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[1, 3], got[0, 0])  # the joint changes the estimate, not only its place
    conv, fc = M.split_variables(m)  # the per-joint biases train with the fc layers
    assert {v.path.split("/")[0] for v in fc} == {"fc6", "fc7", "fc8", "joint6", "joint7"}
    # the plain network takes the images alone
    plain = M.build(spec.replace(joint_input=False), 5)
    assert not M.takes_joint(plain) and M.model_inputs(plain, x, joints) is x


@pytest.mark.parametrize("split", [True, False])
def test_grouped_conv_matches_independent_halves(split):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 9, 8)).astype("float32")
    layer = M.GroupedConv2D(6, 3, groups=2, activation=None, split=split)
    y = layer(x).numpy()
    k, b = layer.kernel.numpy(), layer.bias.numpy()
    assert k.shape == (3, 3, 4, 6)
    # independent expectation: group g's outputs see only group g's inputs
    lo = tf.nn.conv2d(x[..., :4], k[..., :3], 1, "SAME").numpy() + b[:3]
    hi = tf.nn.conv2d(x[..., 4:], k[..., 3:], 1, "SAME").numpy() + b[3:]
    np.testing.assert_allclose(y, np.concatenate([lo, hi], -1), rtol=1e-5, atol=1e-5)


def test_lrn_matches_caffe_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 2, 2, 7)).astype("float32") * 30
    y = M.LRN()(a).numpy()
    expected = np.empty_like(a)
    for c in range(7):
        window = a[..., max(0, c - 2):c + 3]
        expected[..., c] = a[..., c] / (1.0 + 2e-5 * (window ** 2).sum(-1)) ** 0.75
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_pose_loss_hand_computed():
    pred = np.zeros((2, 6), np.float32)
    targets = np.array([[[0.1, 0.2], [0.3, 0.0], [0.0, 0.4]],
                        [[0.5, 0.0], [0.0, 0.0], [0.2, 0.2]]], np.float32)
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    # sample 0: (0.01 + 0.04 + 0.09) / 2 joints; sample 1: 0.25 / 1 joint; mean over the batch
    expected = ((0.01 + 0.04 + 0.09) / 2 + 0.25) / 2
    assert float(M.pose_loss(pred, targets, weights)) == pytest.approx(expected, rel=1e-6)
    # no valid joint: contributes 0, no division by zero
    assert float(M.pose_loss(pred, targets, np.zeros_like(weights))) == 0.0


def test_cpu_variant_options():
    m = M.build(ModelSpec(input_size=113, width=0.5, fc_units=64, init="he", norm="batchnorm"), 14)
    assert isinstance(m.get_layer("norm1"), keras.layers.BatchNormalization)
    conv, fc = M.split_variables(m)  # batchnorm scale/offset (norm1, norm2, bn3-5) go with the conv variables
    assert len(conv) == 10 + 5 * 2 and len(fc) == 6
    assert isinstance(m.get_layer("bn5"), keras.layers.BatchNormalization)
    np.testing.assert_array_equal(m.get_layer("conv2").bias.numpy(), 0.0)


@pytest.mark.parametrize("kwargs, match", [({"num_joints": 0}, "num_joints"),
                                           ({"num_joints": 14, "input_size": 40}, "input_size"),
                                           ({"num_joints": 14, "dropout": 1.0}, "dropout"),
                                           ({"num_joints": 14, "init": "xavier"}, "init"),
                                           ({"num_joints": 14, "norm": "layer"}, "norm")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.build(ModelSpec(**{k: v for k, v in kwargs.items() if k != "num_joints"}), kwargs["num_joints"])
