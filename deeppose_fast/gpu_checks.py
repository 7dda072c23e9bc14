"""The GPU checks of ``deeppose-fast doctor`` beyond the input pipeline's parity (``pipeline/parity.py``).

- ``step_parity``: one training step of a small network (``train_state``: the trainer's own state and
  step function) on the GPU against the same step on the CPU, from the same weights and batch, with
  TensorFloat-32 off, so that both sides compute in float32.
- ``allreduce``: a Horovod sum of GPU tensors over the local GPUs, started by ``horovodrun -np N`` (the
  collective NCCL carries when Horovod was built with it; ``allreduce_skip_reason`` says when it cannot
  run); ``python -m deeppose_fast.gpu_checks allreduce JSON`` is one rank's part.
- ``bench``: a short GPU benchmark made of ``deeppose_fast.bench``'s own stages: crops/s of the DALI GPU
  pipeline, images/s of the training step with bf16 + XLA on synthetic tensors, and the fraction of a
  training step spent waiting for DALI's input.

Tolerance of ``step_parity`` (legend: u = 2^-24, float32's unit roundoff): the step's momentum-SGD
update of each variable is the learning rate times its gradient (the first step, zero velocity), so the
updates compare the gradients. Every value of the forward and backward passes is a float32 dot product
of at most n = B S^2 terms here (B batch, S input side: the longest reduction, a conv1 weight gradient,
sums B x 17 x 17; fc6's inputs are far fewer); the two devices sum in different orders (cuDNN's and
oneDNN's blocking), each within lambda sqrt(n) u of the exact sum relative to the sum of the magnitudes
(probabilistic bound, Higham & Mary 2019, lambda = 6). The errors of the 2 D layer passes (D = 8 layers,
forward and backward) add to first order, and the two devices each err so: relative L2 difference of
each variable's update <= ``step_tolerance`` = 2 x 2 D x lambda sqrt(n) u (2.2e-3 at B = 8, S = 67), the
loss's (forward only) <= half of it. TF32 (10-bit mantissas, u = 2^-11) would exceed it; the check turns
it off.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from deeppose_fast import config
from deeppose_fast.pipeline.parity import LAMBDA, U32, ParityResult

# the small network and batch of the step check: the reference layers (LRN, five convs, three fc) at
# 67 px, a quarter of the channels, no dropout (its random masks differ between devices)
STEP_SETTINGS = dict(input_size=67, width=0.25, fc_units=64, dropout=0.0, init="he", norm="lrn", pool5=True,
                     batch_size=8, optimizer="momentum", conv_lr=0.01, fc_lr=0.01, lr_schedule="constant",
                     loss="l2", mixed_precision="off", xla=False, seed=11, progress=False)
STEP_JOINTS = 14
STEP_LAYERS = 8  # conv1-5, fc6-8

ALLREDUCE_MB = 64  # float32 per rank
ALLREDUCE_REPEATS = 5

BENCH_PRESET = "mpii-scratch"  # the reference network at 227 px
BENCH = dict(batch_size=64, warmup=2, repeats=2, batches=5, seconds=3.0, threads=4)


def step_config():
    """The ``TrainConfig`` of the step check (``STEP_SETTINGS`` over the ``synthetic-cpu`` preset)."""
    return config.preset("synthetic-cpu", **STEP_SETTINGS)


def step_tolerance(batch: int, size: int, layers: int = STEP_LAYERS, lam: float = LAMBDA) -> float:
    """Relative L2 difference allowed between two float32 devices' updates of one variable: 2 devices x
    2 ``layers`` passes x ``lam`` sqrt(n) u with n = ``batch`` x ``size``^2 (see the module docstring)."""
    return 2 * 2 * layers * lam * math.sqrt(batch * size * size) * U32


def relative_l2(a, b) -> float:
    """||b - a|| / ||a|| in float64 (|b - a| alone where a is all zeros; inf for other shapes)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    diff, ref = float(np.linalg.norm(b - a)), float(np.linalg.norm(a))
    return diff / ref if ref > 0 else diff


def update_figures(r: ParityResult, names: list[str], ref: list, other: list, tol: float) -> None:
    """Per variable updates of two devices: the worst relative L2 difference within ``tol``."""
    if len(ref) != len(other):
        r.add("variables updated", len(other), "==", len(ref))
        return
    rel = [relative_l2(a, b) for a, b in zip(ref, other)]
    worst = int(np.argmax(rel)) if rel else 0
    r.add(f"update rel. L2 diff, worst variable ({names[worst] if rel else '-'})", max(rel, default=0.0),
          "<=", tol)


def step_parity(devices: tuple[str, str] = ("/CPU:0", "/GPU:0")) -> ParityResult:
    """One training step of the small network (``STEP_SETTINGS``) on ``devices[0]`` and on
    ``devices[1]``, from the same weights and the same random batch, TF32 off: the loss and every
    variable's update within ``step_tolerance``, and the second state's variables on its device."""
    import tensorflow as tf  # late: the doctor imports this module on hosts where it never runs

    from deeppose_fast import train_state

    cfg = step_config()
    size, batch = cfg.model.input_size, cfg.batch_size
    tol = step_tolerance(batch, size)
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((batch, size, size, 3), dtype=np.float32),
            rng.uniform(-0.5, 0.5, (batch, STEP_JOINTS, 2)).astype(np.float32),
            (rng.random((batch, STEP_JOINTS)) > 0.1).astype(np.float32))
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    runs, initial = [], None
    try:
        for device in devices:
            with tf.device(device):
                train_state.configure_tensorflow(cfg)
                state = train_state.build_state(cfg, STEP_JOINTS)
                if initial is None:
                    initial = state.model.get_weights()
                state.model.set_weights(initial)  # the same start, whatever each device's initialiser drew
                before = [v.numpy() for v in state.model.trainable_weights]
                out = state.step_fn(True)(*(tf.constant(a) for a in data), tf.constant(0.0))
                loss = float(out.numpy()[0])
                after = [v.numpy() for v in state.model.trainable_weights]
                runs.append({"loss": loss, "updates": [b - a for a, b in zip(before, after)],
                             "names": [v.path for v in state.model.trainable_weights],
                             "device": str(state.model.trainable_weights[0].value.device)})
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    ref, other = runs
    r = ParityResult(f"training step, {devices[0]} vs {devices[1]}")
    r.add("variables device", other["device"].rsplit("device:", 1)[-1], "==",
          devices[1].strip("/").upper().replace("DEVICE:", ""))
    r.add("losses finite", bool(np.isfinite([ref["loss"], other["loss"]]).all()), "==", True)
    r.add("loss rel. diff", abs(other["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-30), "<=", tol / 2)
    update_figures(r, ref["names"], ref["updates"], other["updates"], tol)
    return r


# NCCL allreduce --------------------------------------------------------------------------------------
def allreduce_skip_reason(num_gpus: int, built_with: list[str] | None) -> str | None:
    """Why the allreduce check cannot run here, every reason that applies (None when it can): fewer than
    2 GPUs, Horovod missing (``built_with`` None) or built without NCCL."""
    reasons = []
    if num_gpus < 2:
        reasons.append("TensorFlow sees no GPU" if num_gpus == 0
                       else f"{num_gpus} GPU: an allreduce between GPUs needs at least 2")
    if built_with is None:
        reasons.append("Horovod does not import (see the horovod check)")
    elif "nccl" not in built_with:
        reasons.append(f"Horovod was built without NCCL (with {', '.join(built_with) or 'nothing'}; "
                       "`bash scripts/setup.sh` on a GPU host builds it with NCCL)")
    return "; ".join(reasons) or None


def allreduce_worker(p: dict) -> dict | None:
    """One rank's part (under horovodrun): sum a tensor of ``p["mb"]`` MB holding rank + 1 over all
    ranks on ``p["device"]`` (``gpu``: this rank's GPU; ``cpu``: for tests on CPU hosts), ``p["repeats"]``
    timed times. Rank 0 returns whether every rank got exactly N (N + 1) / 2 everywhere, on which device,
    and the median time (None on other ranks)."""
    import tensorflow as tf  # late: a worker process of its own

    from deeppose_fast import dist

    dist.init(pin_gpu=p["device"] == "gpu")  # pins this rank's GPU, memory growth
    size, rank = dist.size(), dist.rank()
    n = int(p["mb"] * 2**20 // 4)
    with tf.device("/GPU:0" if p["device"] == "gpu" else "/CPU:0"):
        x = tf.fill([n], float(rank + 1))
    times = []
    for i in range(p["repeats"] + 1):
        t = time.perf_counter()
        out = dist.allreduce(x, average=False, name=f"doctor_allreduce_{i}")
        exact = bool(tf.reduce_all(out == size * (size + 1) / 2).numpy())  # waits for the result
        times.append(time.perf_counter() - t)
    on_device = p["device"].upper() in str(out.device).rsplit("device:", 1)[-1]
    agreed = dist.allreduce(np.array([exact, on_device], np.float64), average=False, name="doctor_allreduce_ok")
    if rank != 0:
        return None
    seconds = statistics.median(times[1:])
    return {"ranks": size, "exact_ranks": int(agreed[0]), "on_device_ranks": int(agreed[1]),
            "device": str(out.device), "mb": p["mb"], "seconds": seconds,
            # ring allreduce moves 2 (N - 1) / N of the buffer through each link
            "bus_gb_per_s": 2 * (size - 1) / size * n * 4 / seconds / 1e9}


def allreduce(num_ranks: int, *, device: str = "gpu", mb: float = ALLREDUCE_MB, repeats: int = ALLREDUCE_REPEATS,
              timeout: float = 180.0) -> ParityResult:
    """``horovodrun -np num_ranks -H localhost:num_ranks --gloo`` (Gloo starts the ranks; GPU tensors go
    through NCCL when Horovod has it) running ``allreduce_worker``: every rank's sum exact (small integers
    are exact in float32) and on ``device``; the median time and bus bandwidth in ``info``."""
    from deeppose_fast.bench import core, horovod  # late: horovodrun's path, the worker plumbing

    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "2"}  # horovodrun starts `python` from PATH
    params = {"device": device, "mb": mb, "repeats": repeats}
    cmd = [horovod.horovodrun_exe(), "-np", str(num_ranks), "-H", f"localhost:{num_ranks}", "--gloo",
           sys.executable, "-m", "deeppose_fast.gpu_checks", "allreduce", json.dumps(params)]
    res = core.run_command(cmd, f"allreduce over {num_ranks} {device.upper()} ranks", timeout=timeout, env=env)
    r = ParityResult(f"allreduce over {num_ranks} ranks ({device.upper()} tensors)")
    r.add("ranks", res["ranks"], "==", num_ranks)
    r.add("ranks with the exact sum", res["exact_ranks"], "==", num_ranks)
    r.add(f"ranks whose result is on the {device.upper()}", res["on_device_ranks"], "==", num_ranks)
    r.info.update(mb=res["mb"], seconds=res["seconds"], bus_gb_per_s=res["bus_gb_per_s"], device=res["device"])
    return r


# GPU bench -------------------------------------------------------------------------------------------
def bench(data: str | Path, num_joints: int, *, loader: str = "dali-gpu", variant: str = "bf16+xla",
          preset: str = BENCH_PRESET, input_size: int | None = None, timeout: float = 300.0, **sizes) -> dict:
    """A short benchmark with ``deeppose_fast.bench``'s stages, each in its own process: crops/s of the
    ``loader`` pipeline, images/s of the training step (``variant``) on synthetic tensors, and the
    fraction of a training step (same variant) spent waiting for DALI's input, on the prepared folder
    ``data``. ``sizes`` override ``BENCH``. Returns ``{"crops_per_s", "step_images_per_s",
    "end_to_end_images_per_s", "input_wait", "seconds", "params"}``."""
    from deeppose_fast.bench import core, end_to_end, pipeline, train_step  # late: TensorFlow, OpenCV

    t0 = time.perf_counter()
    s = {**BENCH, **sizes}
    size = input_size or config.preset(preset).model.input_size
    common = dict(warmup=s["warmup"], repeats=s["repeats"], batches=s["batches"], seconds=s["seconds"], rounds=1,
                  timeout=timeout)
    crops = pipeline.run(data, loaders=[loader], batch_size=s["batch_size"], input_size=size,
                         threads=s["threads"], augment=config.preset(preset).augment, **common)
    step = train_step.run(preset=preset, batch_size=s["batch_size"], input_size=size, num_joints=num_joints,
                          variants=[variant], **common)
    # stage 3's worker with the variant set (end_to_end.run measures fp32 only)
    e2e = core.compare("end-to-end", "sources", ["dali"], end_to_end.SOURCES,
                       {"data": str(data), "preset": preset, "batch_size": s["batch_size"], "input_size": size,
                        "num_joints": num_joints, "warmup": s["warmup"], "repeats": s["repeats"],
                        "batches": s["batches"], "seconds": s["seconds"], "threads": s["threads"], "tf_threads": 0,
                        "variant": variant}, 1, timeout=timeout)["rows"][0]
    return {"crops_per_s": crops["rows"][0]["median"], "step_images_per_s": step["rows"][0]["median"],
            "end_to_end_images_per_s": e2e["median"], "input_wait": statistics.median(e2e["wait_fraction"]),
            "seconds": round(time.perf_counter() - t0, 1),
            "params": {"loader": loader, "variant": variant, "preset": preset, "input_size": size, **s}}


def main(argv: list[str] | None = None) -> int:
    """``python -m deeppose_fast.gpu_checks allreduce JSON``: one rank of the allreduce check; rank 0
    prints its result for ``bench.core.parse_results``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "allreduce":
        print("usage: python -m deeppose_fast.gpu_checks allreduce JSON", file=sys.stderr)
        return 2
    from deeppose_fast.bench import core

    result = allreduce_worker(json.loads(argv[1]))
    if result is not None:
        core.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
