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

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from deeppose_fast import checkpoint
from deeppose_fast.config import TrainConfig
from deeppose_fast.train import data_iterator

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
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


class ElasticJob:
    """``horovodrun`` in elastic mode over a discovery script that prints ``hosts.txt``."""

    def __init__(self, shards: Path, tmp: Path, hosts: list[str], max_steps: int, launcher: list[str]):
        self.out = tmp / "run"
        self.hosts_file = tmp / "hosts.txt"
        self.hosts_file.write_text("".join(f"{h}:1\n" for h in hosts))
        script = tmp / "discover.sh"
        script.write_text(f"#!/bin/sh\ncat {self.hosts_file}\n")
        script.chmod(0o755)
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="2",
                   OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        cmd = [str(BIN / "horovodrun"), "--gloo", "-np", str(len(hosts)), "--min-np", "2", "--max-np", "3",
               "--host-discovery-script", str(script), *launcher,
               str(BIN / "deeppose-fast"), "train", "--elastic", "--commit-every", "5",
               "--preset", "synthetic-cpu", "--data", str(shards),
               "--out", str(self.out), "--max-steps", str(max_steps), "--batch-size", "4", "--eval-every", "0",
               "--ckpt-every", "20", "--log-every", "1", "--input-size", "67", "--width", "0.25",
               "--fc-units", "32", "--tf-threads", "1", "--num-threads", "1", "--no-progress",
               "--max-minutes", "0"]
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    @property
    def text(self) -> str:
        return "".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> float:
        """Wait for a line matching ``pattern``; returns when it was read."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for t, line in self.lines[seen:]:
                if re.search(pattern, line):
                    return t
            seen = max(seen - 1, 0)
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"never saw {pattern!r}:\n{self.text[-4000:]}")

    def rank_process(self, rank: int) -> psutil.Process:
        """The training process of ``rank`` (a descendant of horovodrun with HOROVOD_RANK set)."""
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if p.environ().get("HOROVOD_RANK") == str(rank) and p.name() not in ("sh", "bash", "env"):
                    return p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        raise AssertionError(f"no process for rank {rank}")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the job did not end within {timeout} s:\n{self.text[-4000:]}")
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        return code

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for p in psutil.process_iter():
            try:
                if str(self.out) in " ".join(p.cmdline()):
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue


def _kill_rank_2(job: ElasticJob) -> tuple[float, int]:
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


def _check_end(job: ElasticJob, code: int, ranks: int, max_steps: int, resets: int) -> str:
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
def test_a_killed_rank_is_survived_on_two_ranks(synthetic_shards, tmp_path):
    # no cool-down: the lost host stays out, the run ends on 2
    job = ElasticJob(synthetic_shards, tmp_path, HOSTS, MAX_STEPS, ["--gloo-timeout-seconds", "10"])
    try:
        _, resumed = _kill_rank_2(job)
        code = job.wait(RUN_BOUND_S)
    finally:
        if job.proc.poll() is None:
            job.kill()
    assert resumed % 5 == 0 and resumed >= 10, job.text[-4000:]  # a commit step
    _check_end(job, code, 2, MAX_STEPS, 1)


@pytest.mark.distributed
def test_a_host_that_returns_rejoins_and_the_run_ends_on_three(synthetic_shards, tmp_path):
    max_steps = 160
    job = ElasticJob(synthetic_shards, tmp_path, HOSTS, max_steps, ["--blacklist-cooldown-range", "1", "2"])
    try:
        killed_at, _ = _kill_rank_2(job)
        joined_at = job.wait_for(r"elastic: ring re-formed with 3 rank\(s\)")
        print(f"ring of 3 {joined_at - killed_at:.1f} s after the kill")
        code = job.wait(RUN_BOUND_S)
    finally:
        if job.proc.poll() is None:
            job.kill()
    _check_end(job, code, 3, max_steps, 2)
