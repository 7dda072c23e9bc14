"""Data-parallel training under ``horovodrun -np 2 -H localhost:2 --gloo`` on CPU.

Checks: the weights are identical on both ranks after training, only rank 0 wrote files, two "hosts" on
loopback train exactly as one host with two ranks, and one step on 2 ranks with half the batch each
equals one single-process step on the full batch; likewise for a cascade stage, whose ranks read their
parts of the joint crops.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import horovod.tensorflow  # noqa: F401  (required: a broken install fails here instead of skipping)
import numpy as np
import pytest

from deeppose_fast import checkpoint
from deeppose_fast.cascade import stage_stats
from deeppose_fast.specs import ModelSpec
from deeppose_fast.testing import dots, runs

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # horovodrun starts python from PATH
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["OMP_NUM_THREADS"] = "1"
    return env


def horovodrun(args, timeout=300, hosts="localhost:2"):
    exe = shutil.which("horovodrun", path=str(BIN)) or shutil.which("horovodrun")
    assert exe is not None, f"horovodrun (installed with horovod) is neither in {BIN} nor on PATH"
    cmd = [exe, "-np", "2", "-H", hosts, "--gloo"] + args
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def train_on_two_ranks(data, out, hosts="localhost:2") -> tuple[str, dict[str, str]]:
    """A 4-step training of a small network under horovodrun; returns the log and {rank: weights sha256}."""
    deeppose = shutil.which("deeppose-fast", path=str(BIN))
    entry = [deeppose] if deeppose else [sys.executable, "-m", "deeppose_fast.cli"]
    log = horovodrun(entry + ["train", "--preset", "synthetic-cpu", "--data", str(data), "--out", str(out),
                              "--max-steps", "4", "--batch-size", "4", "--eval-every", "0", "--ckpt-every", "2",
                              "--input-size", "67", "--width", "0.25", "--fc-units", "32", "--tf-threads", "1",
                              "--num-threads", "1", "--no-progress", "--max-minutes", "0", "--fp16-allreduce"],
                     hosts=hosts)
    digests = dict(re.findall(r"rank (\d)/2 step 4 weights sha256 ([0-9a-f]{64})", log))
    assert set(digests) == {"0", "1"}, log[-3000:]
    return log, digests


def test_two_ranks_train_identically_and_only_rank0_writes(synthetic_shards, tmp_path):
    out = tmp_path / "run"
    log, digests = train_on_two_ranks(synthetic_shards, out)
    assert digests["0"] == digests["1"]
    # only rank 0 wrote: one TensorBoard events file, one header in the log, no stray temporary folders
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    assert (out / "train.log").read_text().count("training synthetic-cpu") == 1
    assert "2 rank(s) x batch 4" in (out / "train.log").read_text()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt-00000002", "ckpt-00000004"]


def test_two_hosts_on_loopback_train_as_one_host_with_two_ranks(synthetic_shards, tmp_path):
    # horovodrun treats each name as a host (no SSH for this machine's own addresses): the ranks meet over
    # TCP as they would across machines, and must reach the same weights, bit for bit
    _, one_host = train_on_two_ranks(synthetic_shards, tmp_path / "one", hosts="localhost:2")
    _, two_hosts = train_on_two_ranks(synthetic_shards, tmp_path / "two", hosts="localhost:1,127.0.0.1:1")
    assert two_hosts == one_host
    assert checkpoint.load(tmp_path / "two").step == 4


STEP_SCRIPT = """
import sys
import numpy as np
from deeppose_fast import checkpoint, config, dist, model, train

out, = sys.argv[1:]
rng = np.random.default_rng(0)
images = rng.normal(size=(8, 67, 67, 3)).astype(np.float32)
targets = rng.uniform(-0.4, 0.4, size=(8, 3, 2)).astype(np.float32)
weights = (rng.uniform(size=(8, 3)) > 0.2).astype(np.float32)

def factory(seed, shard_id, num_shards):
    n = 8 // num_shards
    part = slice(shard_id * n, (shard_id + 1) * n)
    while True:
        yield images[part], targets[part], weights[part]

build = model.build
def build_and_keep(*args, **kwargs):  # the initial weights, to measure each layer's update
    net = build(*args, **kwargs)
    np.savez(out + "-init.npz", **dict(checkpoint.variables_state(net.variables)))
    return net
model.build = build_and_keep

# He init: every layer gets a gradient far above float32 noise (DTF's init leaves conv1-conv3 ~1e-8);
# SGD (momentum, first step): the update is -lr * gradient, so a gradient summed over ranks (twice the
# mean) or not reduced at all (this rank's half batch) moves every layer differently
cfg = config.TrainConfig().replace(data="unused", out=out, input_size=67, width=0.25, fc_units=32, dropout=0.0,
                                   init="he", batch_size=8, optimizer="momentum", conv_lr=0.01, fc_lr=0.01,
                                   max_steps=1, eval_every=0, progress=False, seed=3, tf_threads=1)
dist.init()
cfg = cfg.replace(batch_size=8 // dist.size())
train.train(cfg, dataset_factory=factory, num_joints=3)
"""


def test_one_step_on_two_ranks_equals_one_full_batch_step(tmp_path):
    """Each rank's gradient on its half batch, averaged over the ranks, is the gradient on the full batch:
    every layer, by name, moves as in one process on the full batch, to 1e-3 of its update (a sum over
    ranks is off by 100 %, a rank's own half batch by tens of %)."""
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(STEP_SCRIPT))
    horovodrun(["python", str(script), str(tmp_path / "two")])
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=_env(), check=True,
                   capture_output=True, timeout=300)
    two = checkpoint.load(tmp_path / "two")
    one = checkpoint.load(tmp_path / "one")
    assert two.meta["num_ranks"] == 2 and one.meta["num_ranks"] == 1
    two, one = dict(two.arrays["model"]), dict(one.arrays["model"])
    with np.load(tmp_path / "one-init.npz") as z:
        init = dict(z)
    with np.load(tmp_path / "two-init.npz") as z:
        assert all(np.array_equal(z[name], init[name]) for name in init)  # the same start
    assert set(two) == set(one) == set(init) and {"conv1/kernel", "conv3/kernel", "fc8/kernel"} <= set(one)
    for name in init:
        update = one[name] - init[name]
        scale = np.abs(update).max()
        # the step moved the layer (the comparison is not between two untouched initialisations)
        assert scale > 1e-3 * max(np.abs(init[name]).max(), 1e-2), (name, scale)
        np.testing.assert_allclose(two[name] - init[name], update, rtol=0, atol=1e-3 * scale,
                                   err_msg=name)


STAGE_SPEC = ModelSpec(input_size=67, width=0.25, fc_units=32, dropout=0.0, init="he")

STAGE_STEP_SCRIPT = """
import sys
import numpy as np
from deeppose_fast import config, dist, train
from deeppose_fast.cascade import statistics
from deeppose_fast.pipeline import joint_crops
from deeppose_fast.pipeline.contract import split_info

out, project, spec = sys.argv[1], sys.argv[2], dict(eval(sys.argv[3]))
# SGD (momentum, first step): the update is -lr * gradient, so a gradient summed over ranks or not reduced
# moves every layer differently from the full batch's
cfg = config.TrainConfig.from_dict(dict(
    data=project + "/data/dots", out=out, stage=2, previous=project + "/runs/s1", sigma=1.0, **spec,
    batch_size=8, optimizer="momentum", conv_lr=0.01, fc_lr=0.01, max_steps=1, eval_every=0, progress=False,
    seed=3, tf_threads=1, num_threads=1))
dist.init()
if dist.size() == 2:  # the real stage-2 input: each rank its part, its segment seed
    train.train(cfg.replace(batch_size=4))
else:  # one process, the union of the two ranks' first batches
    stats = statistics.load(project + "/runs/s1/" + statistics.default_file(2))
    table = joint_crops.RecordTable(split_info(cfg.data, "train"))
    parts = [next(joint_crops.stage_train_batches(
        None, stats, sigma=cfg.sigma, batch_size=4, input_size=cfg.model.input_size, flip=cfg.augment.flip,
        seed=train.segment_seed(cfg.seed, 0, rank), shard_id=rank, num_shards=2, table=table, num_threads=1))
        for rank in (0, 1)]
    union = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    def factory(seed, shard_id, num_shards):
        while True:
            yield union

    train.train(cfg, dataset_factory=factory, num_joints=14)
"""


def test_one_stage_2_step_on_two_ranks_equals_one_step_on_the_union(tmp_path):
    project = tmp_path / "project"
    dots.make_dot_dataset(project / "data" / "dots", num_train=16, num_test=2, records_per_shard=5, seed=4)
    runs.save_initial_run(project / "runs" / "s1", STAGE_SPEC, step=3, seed=1,
                          config={"data": str(project / "data" / "dots"), "eval_extension": 1.5})
    stage_stats.fit_run(project / "runs" / "s1", batch_size=8, echo=lambda _: None)
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(STAGE_STEP_SCRIPT))
    args = [str(project), repr(sorted(STAGE_SPEC.to_dict().items()))]
    horovodrun(["python", str(script), str(tmp_path / "two")] + args)
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")] + args, env=_env(), check=True,
                   capture_output=True, timeout=300)
    two, one = checkpoint.load(tmp_path / "two"), checkpoint.load(tmp_path / "one")
    assert two.meta["num_ranks"] == 2 and one.meta["num_ranks"] == 1
    init = dict(checkpoint.load(project / "runs" / "s1").arrays["model"])  # both start from stage 1
    two, one = dict(two.arrays["model"]), dict(one.arrays["model"])
    assert set(two) == set(one) == set(init)
    for name in init:
        update = one[name] - init[name]
        scale = np.abs(update).max()
        assert scale > 0, name  # the step moved the layer
        np.testing.assert_allclose(two[name] - init[name], update, rtol=0, atol=1e-3 * scale, err_msg=name)
