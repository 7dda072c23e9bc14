"""The DeepPose stage-1 regressor: Caffe's AlexNet as the reference TF implementation (DTF) builds it.

Shapes: B batch, S input size, K joints. The network maps images ``(B, S, S, 3)`` (per-image normalised
crops, NHWC) to ``(B, 2K)`` joint coordinates in the crop frame, ``t = p / S - 0.5``
(``reshape(B, K, 2)`` gives x, y per joint).

Layers (names are DTF's variable scopes, which ImageNet weight import relies on):
conv1 11x11/4 96 SAME, ReLU, LRN, maxpool 3/2 VALID; conv2 5x5 256 (2 groups) SAME, ReLU, LRN, pool;
conv3 3x3 384; conv4 3x3 384 (2 groups); conv5 3x3 256 (2 groups); pool; flatten (9216 at S=227);
fc6 4096, ReLU, dropout; fc7 4096, ReLU, dropout; fc8 2K (linear).
Random initialisation as DTF: truncated normal std 0.01 (conv1-5, fc8), 0.005 (fc6, fc7); biases
0, 0.1, 0, 0.1, 0.1 (conv1-5), 0.1, 0.1 (fc6, fc7), 0 (fc8).

The network is built from a ``ModelSpec`` (``build(spec, num_joints)``): ``width`` scales every channel
count and ``fc_units`` the fc6/fc7 width; ``ModelSpec()`` (227 px, width 1, 4096 units) is the reference
network, smaller values give the CPU smoke preset's reduced variant.

A cascade stage's joint-conditioned variant (``spec.joint_input``) takes ``[images (B, S, S, 3), joint
(B,) int32]``: the index of the joint each crop refines selects a learned bias of fc6 and of fc7
(``joint6``, ``joint7``: embeddings of K x fc_units, zero at start), and fc8 regresses that joint alone (2
units). Its output keeps the (B, 2K) layout: the joint's pair holds the estimate, every other pair 0.
``model_inputs(model, images, joints)`` gives either network what it takes.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from deeppose_fast.specs import ModelSpec

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
LAYER_NAMES = CONV_LAYERS + FC_LAYERS
JOINT_LAYERS = ("joint6", "joint7")  # the joint-conditioned variant's per-joint biases (fc group)
# DTF's random initialisation, per layer in LAYER_NAMES order.
_WEIGHT_STD = (0.01, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.01)
_BIAS_INIT = (0.0, 0.1, 0.0, 0.1, 0.1, 0.1, 0.1, 0.0)


@keras.saving.register_keras_serializable(package="deeppose_fast")
class LRN(keras.layers.Layer):
    """Local response normalisation across channels (Caffe/AlexNet): radius 2, alpha 2e-5, beta 0.75,
    bias 1, as ``tf.nn.local_response_normalization`` defines it (alpha is not divided by the size)."""

    def __init__(self, depth_radius=2, alpha=2e-5, beta=0.75, bias=1.0, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.alpha, self.beta, self.bias = depth_radius, alpha, beta, bias

    def call(self, x):
        # LRN has no fp16/bf16 kernel on every device: compute in float32.
        y = tf.nn.local_response_normalization(tf.cast(x, tf.float32), depth_radius=self.depth_radius,
                                               alpha=self.alpha, beta=self.beta, bias=self.bias)
        return tf.cast(y, x.dtype)

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "alpha": self.alpha,
                "beta": self.beta, "bias": self.bias}


@keras.saving.register_keras_serializable(package="deeppose_fast")
class GroupedConv2D(keras.layers.Layer):
    """A convolution whose input and output channels are split into ``groups`` independent halves
    (AlexNet's two-GPU layout): kernel ``(kh, kw, C_in / groups, C_out)``, bias ``(C_out,)``, SAME padding,
    ReLU. Output channels ``[g C_out/groups, (g+1) C_out/groups)`` see input group g only, as DTF's
    split-convolve-concatenate. On CPU it runs as that split (TensorFlow's native grouped convolution is
    about 3x slower there); on GPU as one grouped ``conv2d`` (cuDNN)."""

    def __init__(self, filters, kernel_size, groups=2, strides=1, activation="relu", kernel_initializer=None,
                 bias_initializer="zeros", split=None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.groups, self.strides = filters, kernel_size, groups, strides
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer or "glorot_uniform")
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.split = split

    def build(self, input_shape):
        cin = int(input_shape[-1])
        if cin % self.groups or self.filters % self.groups:
            raise ValueError(f"{self.name}: channels {cin} -> {self.filters} not divisible by {self.groups} groups")
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, cin // self.groups, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
        if self.split is None:
            self.split = not tf.config.list_physical_devices("GPU")

    def call(self, x):
        kernel = tf.cast(self.kernel, x.dtype)
        strides = [1, self.strides, self.strides, 1]
        if self.split:
            xs = tf.split(x, self.groups, axis=-1)
            ks = tf.split(kernel, self.groups, axis=-1)
            y = tf.concat([tf.nn.conv2d(a, b, strides, "SAME") for a, b in zip(xs, ks)], axis=-1)
        else:
            y = tf.nn.conv2d(x, kernel, strides, "SAME")  # grouped: kernel in-channels = C_in / groups
        return self.activation(tf.nn.bias_add(y, tf.cast(self.bias, x.dtype)))

    def compute_output_shape(self, input_shape):
        s = lambda n: None if n is None else -(-n // self.strides)
        return (input_shape[0], s(input_shape[1]), s(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "groups": self.groups, "strides": self.strides,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer), "split": self.split}


def _channels(n: int, width: float) -> int:
    # Grouped layers need channel counts divisible by 2 (groups) on both sides.
    return max(2, int(round(n * width / 2.0)) * 2)


def build(spec: ModelSpec, num_joints: int, split_groups: bool | None = None,
          name: str = "deeppose_alexnet") -> keras.Model:
    """The AlexNet regressor that ``spec`` describes (the one builder: training, benchmarks, checkpoints).

    Args:
        spec: the network settings (``ModelSpec``: input size S, width, fc units, dropout, init, norm,
            pool5; see there).
        num_joints: K; the output has 2K units.
        split_groups: run grouped layers as split convolutions (None: yes unless a GPU is visible);
            the weights are the same either way.
    Returns:
        A functional Keras model, input ``(B, S, S, 3)`` float, output ``(B, 2K)`` float32.

    ``init="he"`` (He normal kernels, zero biases) keeps the signal's scale in a narrow network;
    ``norm="batchnorm"`` makes norm1/norm2 batch normalisation (as the Chainer DeepPose does) and adds
    it after conv3-5; ``pool5=False`` gives fc6 at 113 px the 6x6 grid the reference has at 227 px (all
    three: the CPU preset only).
    """
    if num_joints < 1:
        raise ValueError(f"num_joints must be positive, got {num_joints}")
    if spec.input_size < 67:
        # Below 67 px the three VALID 3/2 pools leave no spatial extent.
        raise ValueError(f"input_size must be at least 67 pixels, got {spec.input_size}")
    width, norm = spec.width, spec.norm

    def init(i):
        if spec.init == "he":
            return keras.initializers.HeNormal(), keras.initializers.Zeros()
        return (keras.initializers.TruncatedNormal(stddev=_WEIGHT_STD[i]),
                keras.initializers.Constant(_BIAS_INIT[i]))

    def normalise(x, name):
        if norm == "batchnorm":
            return keras.layers.BatchNormalization(name=name)(x)
        return LRN(name=name)(x)

    def conv(x, i, filters, kernel, strides=1, groups=1):
        k_init, b_init = init(i)
        if groups > 1:
            return GroupedConv2D(filters, kernel, groups=groups, strides=strides, kernel_initializer=k_init,
                                 bias_initializer=b_init, split=split_groups, name=LAYER_NAMES[i])(x)
        return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", groups=groups,
                                   activation="relu", kernel_initializer=k_init, bias_initializer=b_init,
                                   name=LAYER_NAMES[i])(x)

    def pool(x, name):
        return keras.layers.MaxPooling2D(3, 2, padding="valid", name=name)(x)

    inputs = keras.Input((spec.input_size, spec.input_size, 3), name="image")
    x = conv(inputs, 0, _channels(96, width), 11, strides=4)
    x = pool(normalise(x, "norm1"), "pool1")
    x = conv(x, 1, _channels(256, width), 5, groups=2)
    x = pool(normalise(x, "norm2"), "pool2")
    x = conv(x, 2, _channels(384, width), 3)
    if norm == "batchnorm":
        x = keras.layers.BatchNormalization(name="bn3")(x)
    x = conv(x, 3, _channels(384, width), 3, groups=2)
    if norm == "batchnorm":
        x = keras.layers.BatchNormalization(name="bn4")(x)
    x = conv(x, 4, _channels(256, width), 3, groups=2)
    if norm == "batchnorm":
        x = keras.layers.BatchNormalization(name="bn5")(x)
    if spec.pool5:
        x = pool(x, "pool5")
    x = keras.layers.Flatten(name="flatten")(x)  # NHWC order, as DTF's tf.reshape
    joint = keras.Input((), dtype="int32", name="joint") if spec.joint_input else None
    for i, layer in ((5, "fc6"), (6, "fc7")):
        k_init, b_init = init(i)
        if joint is None:
            x = keras.layers.Dense(spec.fc_units, activation="relu", kernel_initializer=k_init,
                                   bias_initializer=b_init, name=layer)(x)
        else:  # the same layer before its ReLU, plus the joint's own bias
            x = keras.layers.Dense(spec.fc_units, kernel_initializer=k_init, bias_initializer=b_init, name=layer)(x)
            bias = keras.layers.Embedding(num_joints, spec.fc_units, embeddings_initializer="zeros",
                                          name=f"joint{layer[2:]}")(joint)
            x = keras.layers.ReLU(name=f"relu{layer[2:]}")(keras.layers.Add(name=f"add{layer[2:]}")([x, bias]))
        x = keras.layers.Dropout(spec.dropout, name=f"drop{layer[2:]}")(x)
    k_init, b_init = init(7)
    # The regression output stays float32 under mixed precision.
    outputs = keras.layers.Dense(2 * num_joints if joint is None else 2, kernel_initializer=k_init,
                                 bias_initializer=b_init, dtype="float32", name="fc8")(x)
    if joint is None:
        return keras.Model(inputs, outputs, name=name)
    # (B, 2) into the joint's pair of (B, K, 2), then (B, 2K)
    chosen = keras.ops.one_hot(joint, num_joints, dtype="float32")[:, :, None]
    outputs = keras.ops.reshape(chosen * outputs[:, None, :], (-1, 2 * num_joints))
    return keras.Model([inputs, joint], outputs, name=name)


def takes_joint(model: keras.Model) -> bool:
    """Whether ``model`` is a joint-conditioned stage network (``ModelSpec.joint_input``)."""
    return len(model.inputs) == 2


def input_size(model: keras.Model) -> int:
    """S, the side of the network's input images."""
    return int(model.inputs[0].shape[1])


def model_inputs(model: keras.Model, images, joints):
    """What ``model`` takes for crops ``images`` (B, S, S, 3) of joints ``joints`` (B,) int (the label each
    crop's refined joint has in its targets): the images, and the joints too for a joint-conditioned network."""
    return [images, joints] if takes_joint(model) else images


def split_variables(model: keras.Model) -> tuple[list, list]:
    """The trainable variables of the conv layers and of the fc layers (DTF optimises them apart)."""
    conv_vars, fc_vars = [], []
    for layer in model.layers:
        if layer.name in CONV_LAYERS or layer.name in ("norm1", "norm2", "bn3", "bn4", "bn5"):  # batchnorm
            conv_vars.extend(layer.trainable_variables)
        elif layer.name in FC_LAYERS or layer.name in JOINT_LAYERS:
            fc_vars.extend(layer.trainable_variables)
    if len(conv_vars) + len(fc_vars) != len(model.trainable_variables):
        raise ValueError("the model has trainable variables outside conv1-5 and fc6-8")
    return conv_vars, fc_vars


def pose_loss(pred: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, kind: str = "l2") -> tf.Tensor:
    """DTF's loss: per sample, the sum of squared errors over valid coordinates divided by the number of
    valid joints; averaged over the batch. ``kind="l1"`` sums absolute errors instead (CPU preset only:
    L1 converges faster for direct regression).

    Args:
        pred: (B, 2K) network output.
        targets: (B, K, 2) crop-frame targets.
        weights: (B, K), 1 for valid joints, 0 otherwise.
    Returns:
        scalar float32.
    """
    pred = tf.reshape(tf.cast(pred, tf.float32), tf.shape(targets))
    w = tf.cast(weights, tf.float32)
    diff = pred - tf.cast(targets, tf.float32)
    if kind == "l2":
        err = tf.square(diff)
    elif kind == "l1":
        err = tf.abs(diff)
    else:
        raise ValueError(f"loss must be 'l2' or 'l1', got {kind!r}")
    sq = tf.reduce_sum(err, axis=-1) * w  # (B, K)
    per_sample = tf.reduce_sum(sq, axis=1) / tf.maximum(tf.reduce_sum(w, axis=1), 1.0)
    return tf.reduce_mean(per_sample)
