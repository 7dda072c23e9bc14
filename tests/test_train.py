"""The training loop on in-memory data: it learns, resumes exactly, stops cleanly on Ctrl-C and NaN,
keeps the conv layers fixed when asked, and schedules the learning rate."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from deeppose_fast import checkpoint, config, run_folder, train, train_state
from deeppose_fast import model as model_lib

S, K, B = 67, 2, 8


def blob_batch(rng: np.random.Generator, n: int = B):
    """Images with a bright blob at each joint; targets = blob centres in the crop frame."""
    targets = rng.uniform(-0.35, 0.35, size=(n, K, 2)).astype(np.float32)
    yy, xx = np.mgrid[0:S, 0:S] + 0.5
    images = rng.normal(0, 0.1, size=(n, S, S, 3)).astype(np.float32)
    for i in range(n):
        for k in range(K):
            cx, cy = (targets[i, k] + 0.5) * S
            images[i, :, :, k] += 3 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18.0)
    return images, targets, np.ones((n, K), np.float32)


def factory(counter=None, hook=None):
    """A data factory: batches are a pure function of (seed, shard_id), like the DALI pipeline."""

    def make(seed, shard_id, num_shards):
        def gen():
            rng = np.random.default_rng([seed, shard_id])
            while True:
                batch = blob_batch(rng)
                if counter is not None:
                    counter[0] += 1
                    if hook is not None:
                        batch = hook(counter[0], batch)
                yield batch
        return gen()

    return make


def cfg_for(tmp_path, name, **kw):
    base = dict(data="unused", out=str(tmp_path / name), input_size=S, width=0.25, fc_units=32, dropout=0.3,
                batch_size=B, optimizer="adam", conv_lr=1e-3, fc_lr=1e-3, max_steps=8, eval_every=0,
                ckpt_every=100, log_every=2, data_segment_steps=3, progress=False, seed=5, tf_threads=1)
    base.update(kw)
    return config.TrainConfig.from_dict(base)


def run(cfg, **kw):
    kw.setdefault("dataset_factory", factory())
    return train.train(cfg, num_joints=K, skeleton=None, **kw)


def weights_of(result):
    return [v.numpy() for v in result["model"].weights]


def test_loss_decreases_on_a_small_problem(tmp_path):
    cfg = cfg_for(tmp_path, "learn", max_steps=120, dropout=0.0, conv_lr=2e-3, fc_lr=2e-3, init="he",
                  log_every=10, data_segment_steps=1000)
    run(cfg)
    lines = (tmp_path / "learn" / "train_curve.jsonl").read_text().splitlines()
    curve = [json.loads(line)["loss"] for line in lines]
    assert len(curve) == 12
    # blobs at uniform positions: predicting the mean gives about 2 * 0.35^2 / 3 * 2 = 0.16 per sample
    assert curve[0] > 0.08
    assert np.mean(curve[-3:]) < 0.5 * np.mean(curve[:2])


def test_resume_equals_uninterrupted_run(tmp_path):
    full = run(cfg_for(tmp_path, "full"))
    part = run(cfg_for(tmp_path, "split", max_steps=4))  # stops inside data segment 1 (steps 3..5)
    assert part["step"] == 4
    resumed = run(cfg_for(tmp_path, "split"), resume=True)
    assert resumed["step"] == 8
    for a, b in zip(weights_of(full), weights_of(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and the checkpoint holds the same weights as memory
    ck = checkpoint.load(tmp_path / "split")
    assert ck.step == 8 and ck.meta["data"]["segment"] == 2 and ck.meta["data"]["batches_into_segment"] == 2


def test_ctrl_c_writes_a_checkpoint_and_resume_continues_exactly(tmp_path):
    full = run(cfg_for(tmp_path, "full", max_steps=6))

    def interrupt(n, batch):
        if n == 3:  # Ctrl-C while the third batch is being trained on
            signal.raise_signal(signal.SIGINT)
        return batch

    res = run(cfg_for(tmp_path, "int", max_steps=6), dataset_factory=factory([0], interrupt))
    assert res["stopped_by"] == "signal" and res["step"] == 3
    assert checkpoint.load(tmp_path / "int").step == 3
    resumed = run(cfg_for(tmp_path, "int", max_steps=6), resume=True)
    for a, b in zip(weights_of(full), weights_of(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(n, batch):
        if n >= 6:
            images, targets, weights = batch
            return images, np.full_like(targets, np.nan), weights
        return batch

    cfg = cfg_for(tmp_path, "nan", ckpt_every=2, max_steps=10)
    with pytest.raises(train.TrainingDiverged, match="loss is nan at step 6"):
        run(cfg, dataset_factory=factory([0], poison))
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path / "nan" / "checkpoints")]
    assert names[-1] == "ckpt-00000004"
    ck = checkpoint.load(tmp_path / "nan")
    assert all(np.all(np.isfinite(v)) for _, v in ck.arrays["model"])


def test_fix_conv_steps_trains_the_fc_layers_alone(tmp_path):
    cfg = cfg_for(tmp_path, "fix", fix_conv_steps=3, max_steps=3, dropout=0.0)
    res = run(cfg)
    keras.utils.set_random_seed(cfg.seed)
    init = model_lib.build(cfg.model, K)
    for name in ("conv1", "conv2", "conv5"):
        np.testing.assert_array_equal(res["model"].get_layer(name).kernel.numpy(), init.get_layer(name).kernel.numpy())
    for name in ("fc6", "fc8"):
        assert not np.array_equal(res["model"].get_layer(name).kernel.numpy(), init.get_layer(name).kernel.numpy())


def test_learning_rate_schedule():
    cfg = config.TrainConfig(scale_lr=True, warmup_steps=100, max_steps=1000)
    assert train_state.learning_rate(0.1, 0, cfg, 1) == 0.1
    assert train_state.learning_rate(0.1, 0, cfg, 4) == pytest.approx(0.1)
    assert train_state.learning_rate(0.1, 50, cfg, 4) == pytest.approx(0.25)
    assert train_state.learning_rate(0.1, 100, cfg, 4) == pytest.approx(0.4)
    cos = config.TrainConfig(lr_schedule="cosine", max_steps=1000)
    assert train_state.learning_rate(0.1, 500, cos, 1) == pytest.approx(0.05)
    assert train_state.learning_rate(0.1, 1000, cos, 1) == pytest.approx(0.0)


def test_segment_seed_is_pure_and_distinct():
    assert train.segment_seed(1, 2, 0) == train.segment_seed(1, 2, 0)
    seeds = {train.segment_seed(1, s, r) for s in range(50) for r in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**31 - 1 for s in seeds)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        run(cfg_for(tmp_path, "none"), resume=True)
    assert not (tmp_path / "none").exists()  # and nothing was created


def test_xla_and_bf16_mixed_precision_step(tmp_path):
    """The GPU options run (here on CPU): XLA-compiled forward/backward and bfloat16 compute."""
    try:
        res = run(cfg_for(tmp_path, "xla", max_steps=2, xla=True, mixed_precision="bf16", loss="l1"))
        assert np.isfinite(res["loss"])
        assert res["model"].get_layer("conv1").compute_dtype == "bfloat16"
        assert res["model"].get_layer("fc8").kernel.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_resume_is_exact_with_the_dali_pipeline(tmp_path, synthetic_shards):
    """Same as above on the real input pipeline: its batches are a pure function of the segment seed."""
    def cfg(name, steps):
        return config.preset("synthetic-cpu", data=str(synthetic_shards), out=str(tmp_path / name), input_size=S,
                             width=0.25, fc_units=32, batch_size=4, max_steps=steps, eval_every=0, ckpt_every=100,
                             data_segment_steps=3, progress=False, max_minutes=0, num_threads=1, tf_threads=1)

    full = train.train(cfg("full", 5))
    # Ctrl-C during step 4 (the cosine schedule depends on max_steps, so the run must be the same run)
    dali_factory = train.dali_dataset_factory(cfg("split", 5))

    def interrupted(seed, shard_id, num_shards):
        for i, batch in enumerate(dali_factory(seed, shard_id, num_shards)):
            if seed == train.segment_seed(1701, 1, 0) and i == 0:  # first batch of segment 1 = step 4
                signal.raise_signal(signal.SIGINT)
            yield batch

    part = train.train(cfg("split", 5), dataset_factory=interrupted, num_joints=16, skeleton="mpii")
    assert part["stopped_by"] == "signal" and part["step"] == 4
    resumed = train.train(cfg("split", 5), resume=True)
    for a, b in zip(weights_of(full), weights_of(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "full" / "tensorboard").is_dir() and any((tmp_path / "full" / "tensorboard").iterdir())


def _files(folder):
    """{relative path: bytes} of every file under ``folder`` (to show that nothing was touched)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_into_a_used_folder_is_refused_before_any_work(tmp_path):
    run(cfg_for(tmp_path, "used", max_steps=4, ckpt_every=2, keep_checkpoints=1))
    before = _files(tmp_path / "used")
    calls = [0]
    with pytest.raises(run_folder.RunFolderError, match=r"used: already holds a training run \(checkpoints, "
                                                   r"config.json, train.log.*--resume.*new --out"):
        run(cfg_for(tmp_path, "used", max_steps=2, seed=6), dataset_factory=factory(calls))
    assert calls == [0] and _files(tmp_path / "used") == before
    # a run that died before its first checkpoint: it cannot be resumed, so the message does not say so
    (tmp_path / "crashed").mkdir()
    (tmp_path / "crashed" / "train.log").write_text("training custom ...\n")
    with pytest.raises(run_folder.RunFolderError, match=r"\(train.log\); it has no checkpoint to resume from: "
                                                   r"choose a new --out"):
        run(cfg_for(tmp_path, "crashed"))
    (tmp_path / "empty").mkdir()  # an existing empty folder holds no run
    assert run(cfg_for(tmp_path, "empty", max_steps=1))["step"] == 1


def test_huge_learning_rate_stops_before_writing_non_finite_weights(tmp_path):
    # conv_lr=1e8 with batch normalisation (the CPU preset's network) keeps the loss finite while the
    # moving statistics overflow: the run wrote non-finite checkpoints and exited normally
    net = dict(norm="batchnorm", loss="l1", init="he", dropout=0.0, conv_lr=1e8)
    cfg = cfg_for(tmp_path, "huge", max_steps=12, ckpt_every=2, log_every=100, **net)
    with pytest.raises(train.TrainingDiverged, match=r"model variable '.*' holds NaN or infinity at step \d+; "
                                                     r"nothing was saved after .*ckpt-\d+\)\. .*conv_lr=1"):
        run(cfg)
    ck = checkpoint.load(tmp_path / "huge")
    for group in ("model", "opt_conv", "opt_fc"):
        assert all(np.all(np.isfinite(v)) for _, v in ck.arrays[group] if v.dtype.kind == "f"), group
    # between checkpoints, the check at each log step stops it as early
    cfg = cfg_for(tmp_path, "huge-early", max_steps=12, ckpt_every=100, log_every=1, **net)
    with pytest.raises(train.TrainingDiverged, match=r"\(none written in this run\).*start again in a new --out"):
        run(cfg)
    assert checkpoint.list_checkpoints(tmp_path / "huge-early" / "checkpoints") == []


def test_resume_with_another_optimizer_names_the_setting(tmp_path):
    run(cfg_for(tmp_path, "adam", max_steps=2))
    with pytest.raises(checkpoint.CheckpointError,
                       match="the run was trained with optimizer=adam, this configuration says "
                             "optimizer=adagrad; resume with --optimizer adam or start a new --out"):
        run(cfg_for(tmp_path, "adam", max_steps=4, optimizer="adagrad"), resume=True)
    with pytest.raises(checkpoint.CheckpointError, match="pool5=True.*resume with --pool5 or"):
        run(cfg_for(tmp_path, "adam", max_steps=4, pool5=False), resume=True)


def test_resume_on_fewer_ranks_warns_that_the_data_order_changes(tmp_path, capsys):
    run(cfg_for(tmp_path, "ranks", max_steps=2))
    meta_file = checkpoint.resolve(tmp_path / "ranks") / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "num_ranks": 2}))  # as if written by a 2-rank run
    capsys.readouterr()
    assert run(cfg_for(tmp_path, "ranks", max_steps=4), resume=True)["step"] == 4
    warned = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1
    assert "trained on 2 rank(s), this run has 1: the data order changes" in warned[0]
    assert warned[0] in (tmp_path / "ranks" / "train.log").read_text()


def test_resume_removes_half_written_checkpoints_of_a_killed_writer(tmp_path):
    run(cfg_for(tmp_path, "killed", max_steps=2))
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a writer that is gone (SIGKILL mid-write)
    left = tmp_path / "killed" / "checkpoints" / f"ckpt-00000004.tmp-{proc.pid}"
    left.mkdir()
    (left / "state.npz").write_bytes(b"\0" * 4096)
    run(cfg_for(tmp_path, "killed", max_steps=3), resume=True)
    assert not left.exists()
    assert f"removed {left.name}" in (tmp_path / "killed" / "train.log").read_text()


def test_unwritable_out_is_refused_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(run_folder.RunFolderError, match=r"a-file/run: cannot write the run there .*writable --out"):
        run(cfg_for(tmp_path, "a-file/run"))
    # on resume, a sub-folder the run writes into (TensorBoard's, here) that cannot take a file
    run(cfg_for(tmp_path, "resumed", max_steps=2))
    shutil.rmtree(tmp_path / "resumed" / "tensorboard")
    (tmp_path / "resumed" / "tensorboard").write_text("")
    with pytest.raises(run_folder.RunFolderError, match=r"resumed: cannot write the run there .*tensorboard"):
        run(cfg_for(tmp_path, "resumed", max_steps=3), resume=True)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders: permissions cannot be tested as root")
def test_read_only_out_is_refused_before_any_work(tmp_path):
    run(cfg_for(tmp_path, "ro", max_steps=2))
    (tmp_path / "ro" / "tensorboard").chmod(0o555)
    try:
        with pytest.raises(run_folder.RunFolderError, match=r"ro: cannot write the run there \(Permission denied"):
            run(cfg_for(tmp_path, "ro", max_steps=3), resume=True)
    finally:
        (tmp_path / "ro" / "tensorboard").chmod(0o755)
