"""``deeppose_fast.gpu_checks``: the doctor's training-step, allreduce and benchmark checks.

On every host: the tolerance arithmetic by hand, the step check with the CPU on both sides (identical) and
with a changed step on one side (caught), when the allreduce is skipped and why. Marked: the allreduce
worker under ``horovodrun --gloo`` on CPU tensors (``distributed``), the benchmark's plumbing on CPU
(``slow``), and the real GPU runs (``gpu``).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from deeppose_fast import gpu_checks, train_state
from deeppose_fast.pipeline import parity


def test_step_tolerance_by_hand():
    """2 devices x 2 x 8 layer passes x 6 sqrt(8 x 67^2) x 2^-24 = 192 x 189.504 / 16777216."""
    assert gpu_checks.step_tolerance(8, 67) == pytest.approx(192 * math.sqrt(8 * 67 * 67) / 2**24)
    assert gpu_checks.step_tolerance(8, 67) == pytest.approx(2.1687e-3, rel=1e-4)
    cfg = gpu_checks.step_config()
    assert (cfg.batch_size, cfg.model.input_size, cfg.model.dropout, cfg.optimizer) == (8, 67, 0.0, "momentum")
    assert gpu_checks.step_tolerance(8, 67) < 2.0 ** -8  # far below what TF32's 2^-11 roundoff gives


def test_updates_compared_at_the_bound():
    tol = 1e-3
    ref = [np.ones(4), np.zeros(2)]
    near = [np.ones(4) + np.array([0.0, 0.0, 0.0, 0.99 * tol * 2]), np.zeros(2)]  # ||ref|| = 2
    far = [np.ones(4) + np.array([0.0, 0.0, 0.0, 1.01 * tol * 2]), np.zeros(2)]
    r = parity.ParityResult("step")
    gpu_checks.update_figures(r, ["a", "b"], ref, near, tol)
    assert r.passed and r.figures[0].value == pytest.approx(0.99 * tol)
    r = parity.ParityResult("step")
    gpu_checks.update_figures(r, ["a", "b"], ref, far, tol)
    assert [f.name for f in r.failures] == ["update rel. L2 diff, worst variable (a)"]
    r = parity.ParityResult("step")
    gpu_checks.update_figures(r, ["a", "b"], ref, [np.zeros(2), np.full(2, 2 * tol)], tol)  # no reference
    assert r.failures[0].value == math.inf  # shapes differ for a
    assert gpu_checks.relative_l2(np.zeros(2), np.array([3e-4, 4e-4])) == pytest.approx(5e-4)  # absolute


def test_allreduce_skip_reasons():
    assert gpu_checks.allreduce_skip_reason(2, ["gloo", "nccl"]) is None
    assert gpu_checks.allreduce_skip_reason(1, ["gloo", "nccl"]) == \
        "1 GPU: an allreduce between GPUs needs at least 2"
    no_nccl = gpu_checks.allreduce_skip_reason(4, ["gloo"])
    assert no_nccl.startswith("Horovod was built without NCCL (with gloo;") and "scripts/setup.sh" in no_nccl
    both = gpu_checks.allreduce_skip_reason(0, ["gloo"])
    assert both.startswith("TensorFlow sees no GPU; Horovod was built without NCCL")
    assert gpu_checks.allreduce_skip_reason(2, None) == "Horovod does not import (see the horovod check)"


def test_step_parity_cpu_against_cpu_and_a_changed_step(monkeypatch):
    r = gpu_checks.step_parity(("/CPU:0", "/CPU:0"))
    assert r.passed, r.summary()
    values = {f.name.split(",")[0]: f.value for f in r.figures}
    assert values["variables device"] == "CPU:0" and values["losses finite"] is True
    assert values["loss rel. diff"] == 0 and values["update rel. L2 diff"] == 0

    build = train_state.build_state
    made = []

    def second_differs(cfg, num_joints, *args):  # the second state's fc learning rate 0.5 % higher
        made.append(cfg)
        return build(cfg.replace(fc_lr=cfg.fc_lr * (1.005 if len(made) > 1 else 1.0)), num_joints, *args)

    monkeypatch.setattr(train_state, "build_state", second_differs)
    r = gpu_checks.step_parity(("/CPU:0", "/CPU:0"))
    assert [f.name for f in r.failures] == [f.name for f in r.figures if f.name.startswith("update rel.")]
    assert r.failures[0].value == pytest.approx(0.005, rel=1e-3)


@pytest.mark.gpu
def test_step_parity_gpu_against_cpu():
    r = gpu_checks.step_parity()
    assert r.passed, r.summary()


@pytest.mark.distributed
@pytest.mark.slow
def test_allreduce_worker_under_horovodrun_on_cpu():
    """The worker and its plumbing with CPU tensors over Gloo (the GPU run differs only in the device)."""
    r = gpu_checks.allreduce(2, device="cpu", mb=1, repeats=2, timeout=240)
    assert r.passed, r.summary()
    assert r.info["device"].endswith("CPU:0") and r.info["seconds"] > 0 and r.info["mb"] == 1


@pytest.mark.gpu
def test_allreduce_over_the_local_gpus():
    import tensorflow as tf

    from deeppose_fast import doctor

    gpus = tf.config.list_physical_devices("GPU")
    built = doctor.horovod_check()["data"]["built_with"]
    reason = gpu_checks.allreduce_skip_reason(len(gpus), built)
    if reason:
        pytest.skip(reason)
    r = gpu_checks.allreduce(len(gpus))
    assert r.passed, r.summary()


@pytest.fixture(scope="module")
def dot_dir(tmp_path_factory):
    return parity.make_dot_data(tmp_path_factory.mktemp("dots"))


@pytest.mark.slow
def test_bench_plumbing_on_cpu(dot_dir):
    """The three stages' workers accept what ``bench`` sends them (the CPU loader, fp32, the small preset:
    the GPU run differs in the loader and variant names only)."""
    b = gpu_checks.bench(dot_dir, 14, loader="dali-cpu", variant="fp32", preset="synthetic-cpu", batch_size=4,
                         warmup=1, repeats=1, batches=1, seconds=0.0, threads=1, timeout=600)
    assert b["crops_per_s"] > 0 and b["step_images_per_s"] > 0 and b["end_to_end_images_per_s"] > 0
    assert 0 <= b["input_wait"] <= 1 and b["seconds"] > 0
    assert b["params"]["loader"] == "dali-cpu" and b["params"]["input_size"] == 113


@pytest.mark.gpu
@pytest.mark.slow
def test_bench_on_the_gpu(dot_dir):
    b = gpu_checks.bench(dot_dir, 14)
    assert b["crops_per_s"] > 0 and b["step_images_per_s"] > 0 and 0 <= b["input_wait"] <= 1
