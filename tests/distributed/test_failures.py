"""A distributed job that loses a rank, or is stopped with Ctrl-C, under ``horovodrun --gloo`` on CPU.

- A rank killed with SIGKILL mid-run ends the whole job quickly, non-zero, and the surviving rank 0
  says once which rank was lost, which checkpoint is the newest and how to resume.
- Ctrl-C (SIGINT) to horovodrun stops every rank after the same step; rank 0 writes a checkpoint and
  prints one line saying so, and no traceback makes the clean stop read as a failure.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from deeppose_fast import checkpoint

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KILL_BOUND_S = 60  # the job must be over this long after a rank dies (measured: a few seconds)


class Job:
    """``horovodrun -np 2`` of a long training, its output collected line by line in a thread."""

    def __init__(self, shards: Path, out: Path):
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="2",
                   OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        cmd = [str(BIN / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
               str(BIN / "deeppose-fast"), "train", "--preset", "synthetic-cpu", "--data", str(shards),
               "--out", str(out), "--max-steps", "100000", "--batch-size", "4", "--eval-every", "0",
               "--ckpt-every", "5", "--log-every", "5", "--input-size", "67", "--width", "0.25",
               "--fc-units", "32", "--tf-threads", "1", "--num-threads", "1", "--no-progress",
               "--max-minutes", "0"]
        self.out = out
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"never saw {pattern!r}:\n{self.text[-3000:]}")

    def rank_process(self, rank: int) -> psutil.Process:
        """The training process of ``rank`` (a descendant of horovodrun with HOROVOD_RANK set)."""
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                # the shell horovodrun starts has the same environment: take the Python process under it
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
            pytest.fail(f"the job did not end within {timeout} s:\n{self.text[-3000:]}")
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        return code

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for p in psutil.process_iter(["environ"]):
            try:
                if str(self.out) in " ".join(p.cmdline()):
                    p.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue


def test_a_killed_rank_ends_the_job_with_a_message_naming_it(synthetic_shards, tmp_path):
    job = Job(synthetic_shards, tmp_path / "run")
    job.wait_for(r"\[0\]<stdout>:step 10 ")
    victim = job.rank_process(1)
    killed_at = time.monotonic()
    victim.kill()
    code = job.wait(KILL_BOUND_S)
    elapsed = time.monotonic() - killed_at
    text = job.text
    assert code != 0, text[-3000:]
    lost = re.findall(r"rank 1 \(pid (\d+) on [^)]+\) was lost at step (\d+)", text)
    assert len(lost) == 1, text[-3000:]  # once, from rank 0
    assert int(lost[0][0]) == victim.pid
    newest = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert f"newest checkpoint {newest}" in text
    assert f"deeppose-fast train --resume --out {tmp_path / 'run'}" in text
    print(f"job ended {elapsed:.1f} s after the kill")  # reported with -s


def test_ctrl_c_to_horovodrun_stops_every_rank_at_one_step_cleanly(synthetic_shards, tmp_path):
    job = Job(synthetic_shards, tmp_path / "run")
    job.wait_for(r"\[0\]<stdout>:step 10 ")
    job.proc.send_signal(signal.SIGINT)
    code = job.wait(60)
    text = job.text
    steps = re.findall(r"rank \d/2 step (\d+) weights sha256 ([0-9a-f]{64})", text)
    assert len(steps) == 2 and steps[0] == steps[1], text[-3000:]  # same step, same weights
    step = int(steps[0][0])
    stopped = re.findall(r"stopped cleanly at step (\d+) \(signal\); checkpoint (\S+);", text)
    assert stopped == [(str(step), str(checkpoint.resolve(tmp_path / "run")))], text[-3000:]
    assert checkpoint.load(tmp_path / "run").step == step
    assert f"deeppose-fast train --resume --out {tmp_path / 'run'}" in text
    assert "Traceback" not in text, text[-3000:]
    assert code == 0, text[-3000:]
