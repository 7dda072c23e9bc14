"""What a training run holds and how one step changes it: the network, both optimisers (built, so no slot
is created lazily), the global step and the batch-norm statistics (``TrainState``, made by
``build_state``), the learning-rate schedule and the step function. ``train`` and ``bench`` build their
state here, so a benchmark measures the trainer's own step.

Shapes: B batch per rank, S input size, K joints; a batch is ``images (B, S, S, 3)``, ``targets (B, K,
2)`` (crop frame, ``p / S - 0.5``), ``weights (B, K)``.

Importing this module loads TensorFlow (through ``model``) but runs no op: ``configure_tensorflow``
must come before the first.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from deeppose_fast import dist
from deeppose_fast import model as model_lib
from deeppose_fast.config import TrainConfig


def configure_tensorflow(cfg: TrainConfig) -> None:
    """Threads, mixed precision; call before any TensorFlow op runs."""
    if cfg.tf_threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.tf_threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cfg.tf_threads)))
        except RuntimeError:  # the runtime is already initialised (a second run in one process)
            pass
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if cfg.mixed_precision == "bf16" else "float32")


def learning_rate(base: float, step: int, cfg: TrainConfig, num_ranks: int) -> float:
    """The rate at ``step``: ``base``, multiplied by the number of ranks when ``scale_lr`` is set and
    reached linearly over ``warmup_steps`` (Goyal et al.), times the cosine decay if asked."""
    lr = base
    if cfg.scale_lr and num_ranks > 1:
        target = base * num_ranks
        if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
            lr = base + (target - base) * step / cfg.warmup_steps
        else:
            lr = target
    if cfg.lr_schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.max_steps) / cfg.max_steps))
    return lr


def make_optimizer(cfg: TrainConfig, lr: float, name: str):
    if cfg.optimizer == "adagrad":
        return keras.optimizers.Adagrad(lr, initial_accumulator_value=cfg.initial_accumulator, name=name)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr, name=name)
    return keras.optimizers.SGD(lr, momentum=0.9, name=name)


@dataclass
class TrainState:
    """The network, its two optimisers (conv and fc variables apart, as DTF), the step counter, and the
    step functions built for it (one per ``train_conv``, traced on first use)."""

    cfg: TrainConfig
    num_ranks: int
    model: object  # keras.Model
    opt_conv: object
    opt_fc: object
    conv_vars: list
    fc_vars: list
    global_step: object  # tf.Variable int64
    _steps: dict = field(default_factory=dict, repr=False)

    @property
    def groups(self) -> dict[str, list]:
        """What a checkpoint holds, by group (``checkpoint.save`` / ``checkpoint.assign``)."""
        return {"model": self.model.variables, "opt_conv": self.opt_conv.variables,
                "opt_fc": self.opt_fc.variables}

    @property
    def variables(self) -> list:
        """Every variable of the state, the step included (what rank 0 broadcasts)."""
        return [v for group in self.groups.values() for v in group] + [self.global_step]

    @property
    def bn_stats(self) -> list:
        """Batch-norm moving statistics: computed per rank, averaged over ranks before use."""
        return [v for v in self.model.non_trainable_variables if "moving_" in v.path]

    @property
    def step(self) -> int:
        return int(self.global_step.numpy())

    def set_num_ranks(self, num_ranks: int) -> None:
        """Follow a new number of ranks (elastic training): the rates scale with it, and the step
        functions are traced again for the new ring."""
        self.num_ranks = num_ranks
        self._steps.clear()

    def set_learning_rates(self, step: int) -> None:
        """The configured rates at ``step`` (the schedule, not a checkpoint, decides them)."""
        self.opt_conv.learning_rate = learning_rate(self.cfg.conv_lr, step, self.cfg, self.num_ranks)
        self.opt_fc.learning_rate = learning_rate(self.cfg.fc_lr, step, self.cfg, self.num_ranks)

    def step_fn(self, train_conv: bool) -> Callable:
        """``fn(images, targets, weights, stop_vote) -> [sum over ranks of the loss, of the stop votes]``;
        with ``train_conv`` False the conv variables stay fixed (``fix_conv_steps``)."""
        if train_conv not in self._steps:
            self._steps[train_conv] = make_step(self, train_conv)
        return self._steps[train_conv]


def build_state(cfg: TrainConfig, num_joints: int, num_ranks: int = 1) -> TrainState:
    """A fresh state for ``cfg``: the network ``model.build(cfg.model, num_joints)`` seeded with
    ``cfg.seed``, both optimisers built at the step-0 rates, the step at 0. Call after
    ``configure_tensorflow`` (the mixed-precision policy applies when the layers are made)."""
    keras.utils.set_random_seed(cfg.seed)
    model = model_lib.build(cfg.model, num_joints)
    conv_vars, fc_vars = model_lib.split_variables(model)
    opt_conv = make_optimizer(cfg, learning_rate(cfg.conv_lr, 0, cfg, num_ranks), "opt_conv")
    opt_fc = make_optimizer(cfg, learning_rate(cfg.fc_lr, 0, cfg, num_ranks), "opt_fc")
    opt_conv.build(conv_vars)
    opt_fc.build(fc_vars)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    return TrainState(cfg, num_ranks, model, opt_conv, opt_fc, conv_vars, fc_vars, global_step)


def make_step(state: TrainState, train_conv: bool) -> Callable:
    """One training step as a tf.function: forward, backward, average over ranks, apply, count the step.

    Returns ``[sum over ranks of the loss, sum over ranks of the stop votes]``.
    """
    cfg, model = state.cfg, state.model
    conv_src, fc_src = dist.backing(state.conv_vars), dist.backing(state.fc_vars)
    sources = conv_src + fc_src if train_conv else fc_src

    def forward(images, targets, weights):
        return model_lib.pose_loss(model(images, training=True), targets, weights, cfg.loss)

    if cfg.xla:
        # XLA compiles forward and backward; Horovod's collectives stay outside the cluster.
        forward = tf.function(forward, jit_compile=True)

    @tf.function
    def step(images, targets, weights, stop_vote):
        if isinstance(images, (tuple, list)):  # a joint-conditioned network: images and joints
            images = [tf.cast(images[0], tf.float32), images[1]]
        else:
            images = tf.cast(images, tf.float32)
        with tf.GradientTape() as tape:
            loss = forward(images, targets, weights)
        grads = dist.gradient_tape(tape, cfg.fp16_allreduce).gradient(loss, sources)
        if train_conv:
            n = len(conv_src)
            state.opt_conv.apply_gradients(zip(grads[:n], state.conv_vars))
            state.opt_fc.apply_gradients(zip(grads[n:], state.fc_vars))
        else:
            state.opt_fc.apply_gradients(zip(grads, state.fc_vars))
        state.global_step.assign_add(1)
        return dist.allreduce(tf.stack([tf.cast(loss, tf.float32), stop_vote]), average=False,
                              name="loss_and_stop")

    return step


def non_finite_check(groups: dict[str, list]) -> Callable[[], str | None]:
    """A function naming the first variable of ``groups`` that holds NaN or infinity on any rank (None
    when all are finite). One fused reduction per variable on the device, summed over ranks (a
    collective: every rank calls it at the same steps)."""
    named = [(f"{group} variable {getattr(v, 'path', v.name)!r}", v)
             for group, variables in groups.items() for v in variables
             if tf.as_dtype(v.dtype).is_floating]
    names = [n for n, _ in named]
    tensors = dist.backing([v for _, v in named])

    @tf.function
    def count_bad():
        bad = tf.stack([tf.cast(tf.reduce_any(~tf.math.is_finite(t)), tf.float32) for t in tensors])
        return dist.allreduce(bad, average=False, name="non_finite_check")

    def first_bad() -> str | None:
        bad = count_bad().numpy()
        return names[int(np.argmax(bad > 0))] if bad.any() else None

    return first_bad


def weights_digest(model) -> str:
    """SHA-256 of the model's weights (to compare ranks)."""
    h = hashlib.sha256()
    for v in model.weights:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()
