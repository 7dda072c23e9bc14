"""A distributed job that loses a rank, or is stopped with Ctrl-C, under ``horovodrun --gloo`` on CPU.

- A rank killed with SIGKILL mid-run ends the whole job quickly, non-zero, and the surviving rank 0
  says once which rank was lost, which checkpoint is the newest and how to resume.
- Ctrl-C (SIGINT) to horovodrun stops every rank after the same step; rank 0 writes a checkpoint and
  prints one line saying so, and no traceback makes the clean stop read as a failure.
"""
from __future__ import annotations

import re
import signal
import time

import pytest

from deeppose_fast import checkpoint

pytestmark = pytest.mark.distributed

KILL_BOUND_S = 60  # the job must be over this long after a rank dies (measured: a few seconds)


def two_rank_job(horovod_job, data, out):
    """A long 2-rank training (checkpoint every 5 steps) to kill or interrupt."""
    return horovod_job(["-np", "2", "-H", "localhost:2", "--gloo"], out,
                       ["--data", str(data), "--max-steps", "100000", "--ckpt-every", "5", "--log-every", "5"])


def test_a_killed_rank_ends_the_job_with_a_message_naming_it(horovod_job, synthetic_shards, tmp_path):
    job = two_rank_job(horovod_job, synthetic_shards, tmp_path / "run")
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


def test_ctrl_c_to_horovodrun_stops_every_rank_at_one_step_cleanly(horovod_job, synthetic_shards, tmp_path):
    job = two_rank_job(horovod_job, synthetic_shards, tmp_path / "run")
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
