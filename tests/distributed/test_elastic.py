"""Elastic training under ``horovodrun --gloo --min-np 2 --max-np 3 --host-discovery-script`` on CPU.

Three ranks on three host names that are all this machine (``localhost``, ``127.0.0.1`` and the host
name: Horovod blacklists the host of a failed worker, so each rank needs its own); one is killed with
SIGKILL mid-run: the two left roll back to the last commit, re-form the ring and reach ``--max-steps``
with identical weights, and the final checkpoint loads. With a blacklist cool-down
(``--blacklist-cooldown-range``), the lost host, still listed by the discovery script, comes back after
it (as a preempted node that returns): a rank starts there, receives the state, and the run ends on 3. Gloo's timeout (``--gloo-timeout-seconds``) bounds how long a survivor can
wait on the dead rank, and also how long the ring waits for a joining rank to start: 10 s in the first
test, Horovod's 30 s in the second, where a rank starts (TensorFlow's import) on a busy machine. Also the data guarantee the restart relies on:
a rank's batches are a pure function of (seed, step, rank, number of ranks).
"""
from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from deeppose_fast import checkpoint
from deeppose_fast.config import TrainConfig
from deeppose_fast.train import data_iterator

MAX_STEPS = 80
RUN_BOUND_S = 240  # the whole elastic job, kill and reset included
HOSTS = ["localhost", "127.0.0.1", socket.gethostname()]  # all this machine; horovodrun needs no SSH


def _fake_factory(seed: int, shard_id: int, num_shards: int):
    """Endless 'batches' naming where they come from: (seed, shard, num_shards, index)."""
    i = 0
    while True:
        yield (seed, shard_id, num_shards, i)
        i += 1


@pytest.mark.parametrize("num_ranks", [2, 3])
def test_batches_are_a_pure_function_of_seed_step_rank_and_ranks(num_ranks):
    cfg = TrainConfig(data_segment_steps=7, seed=5)
    for rank in range(num_ranks):
        reference = data_iterator(_fake_factory, cfg, 0, rank, num_ranks)
        ahead = [next(reference) for _ in range(7)]  # one segment from step 0
        assert [next(data_iterator(_fake_factory, cfg, s, rank, num_ranks)) for s in range(7)] == ahead
        # the next segment has its own seed, the same from wherever it is opened
        second = data_iterator(_fake_factory, cfg, 7, rank, num_ranks)
        assert next(data_iterator(_fake_factory, cfg, 9, rank, num_ranks)) == [next(second) for _ in range(3)][2]
        assert next(data_iterator(_fake_factory, cfg, 7, rank, num_ranks))[0] != ahead[0][0]
    # a different number of ranks splits the data differently
    assert next(data_iterator(_fake_factory, cfg, 3, 0, num_ranks))[2] == num_ranks


def elastic_job(horovod_job, data, tmp: Path, max_steps: int, launcher: list[str]):
    """``horovodrun`` in elastic mode over a discovery script that prints ``tmp/hosts.txt`` (one slot on
    each of ``HOSTS``), training with a commit every 5 steps."""
    hosts_file = tmp / "hosts.txt"
    hosts_file.write_text("".join(f"{h}:1\n" for h in HOSTS))
    script = tmp / "discover.sh"
    script.write_text(f"#!/bin/sh\ncat {hosts_file}\n")
    script.chmod(0o755)
    return horovod_job(["--gloo", "-np", str(len(HOSTS)), "--min-np", "2", "--max-np", "3",
                        "--host-discovery-script", str(script), *launcher], tmp / "run",
                       ["--elastic", "--commit-every", "5", "--data", str(data), "--max-steps", str(max_steps),
                        "--ckpt-every", "20", "--log-every", "1"])


def _kill_rank_2(job) -> tuple[float, int]:
    """SIGKILL rank 2 after step 10; wait for the ring of 2. Returns (kill time, the step the survivors
    continued from), and prints how long the reset and the first step took."""
    job.wait_for(r"step 10 loss")
    victim = job.rank_process(2)
    killed_at = time.monotonic()
    victim.kill()
    reset_at = job.wait_for(r"elastic: ring re-formed with 2 rank\(s\); continuing from step (\d+)")
    resumed = int(re.search(r"ring re-formed with 2 rank\(s\); continuing from step (\d+)", job.text).group(1))
    first_step_at = job.wait_for(rf"step {resumed + 1} loss")
    print(f"ring of 2 {reset_at - killed_at:.1f} s after the kill, its first step "
          f"{first_step_at - killed_at:.1f} s after the kill")
    return killed_at, resumed


def _check_end(job, code: int, ranks: int, max_steps: int, resets: int) -> str:
    """Every rank of the final ring at ``max_steps`` with the same weights, the checkpoint loads, the
    commits' cost logged; returns the log."""
    text = job.text
    assert code == 0, text[-4000:]
    digests = re.findall(rf"rank (\d)/{ranks} step {max_steps} weights sha256 ([0-9a-f]{{64}})", text)
    assert sorted(r for r, _ in digests) == [str(r) for r in range(ranks)], text[-4000:]
    assert len({d for _, d in digests}) == 1, text[-4000:]  # bit for bit
    assert checkpoint.load(job.out).step == max_steps
    assert re.search(r"elastic: \d+ commit\(s\) every 5 steps, [\d.]+ ms each, [\d.]+% of the training time; "
                     rf"{resets} reset\(s\)", text), text[-4000:]
    print("\n".join(line for line in text.splitlines() if "elastic:" in line))
    return text


@pytest.mark.distributed
def test_a_killed_rank_is_survived_on_two_ranks(horovod_job, synthetic_shards, tmp_path):
    # no cool-down: the lost host stays out, the run ends on 2
    job = elastic_job(horovod_job, synthetic_shards, tmp_path, MAX_STEPS, ["--gloo-timeout-seconds", "10"])
    _, resumed = _kill_rank_2(job)
    code = job.wait(RUN_BOUND_S)
    assert resumed % 5 == 0 and resumed >= 10, job.text[-4000:]  # a commit step
    _check_end(job, code, 2, MAX_STEPS, 1)


@pytest.mark.distributed
def test_a_host_that_returns_rejoins_and_the_run_ends_on_three(horovod_job, synthetic_shards, tmp_path):
    max_steps = 160
    job = elastic_job(horovod_job, synthetic_shards, tmp_path, max_steps, ["--blacklist-cooldown-range", "1", "2"])
    killed_at, _ = _kill_rank_2(job)
    joined_at = job.wait_for(r"elastic: ring re-formed with 3 rank\(s\)")
    print(f"ring of 3 {joined_at - killed_at:.1f} s after the kill")
    code = job.wait(RUN_BOUND_S)
    _check_end(job, code, 3, max_steps, 2)
