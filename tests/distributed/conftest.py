"""A long ``horovodrun ... deeppose-fast train`` job of a tiny network, watched while it runs: the tests
under this folder kill its ranks, interrupt it and read its output line by line."""
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

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# the synthetic-cpu recipe on a network small enough for several ranks on two cores
TINY_NETWORK = ["--preset", "synthetic-cpu", "--batch-size", "4", "--eval-every", "0", "--input-size", "67",
                "--width", "0.25", "--fc-units", "32", "--tf-threads", "1", "--num-threads", "1", "--no-progress",
                "--max-minutes", "0"]


class HorovodJob:
    """``horovodrun LAUNCHER... deeppose-fast train TINY_NETWORK --out OUT TRAIN...``, its output (stdout
    and stderr) collected with the time each line was read."""

    def __init__(self, launcher: list[str], out: Path, train: list[str]):
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", TF_CPP_MIN_LOG_LEVEL="2",
                   OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
        cmd = [str(BIN / "horovodrun"), *launcher, str(BIN / "deeppose-fast"), "train", *TINY_NETWORK,
               "--out", str(out), *train]
        self.out = out
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

    def wait_for(self, pattern: str, timeout: float = 240) -> float:
        """Wait for a line matching ``pattern``; returns when it was read."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            read = len(self.lines)  # whole lines only: the reader appends each line once it is complete
            for t, line in self.lines[seen:read]:
                if re.search(pattern, line):
                    return t
            seen = read
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"never saw {pattern!r}:\n{self.text[-4000:]}")

    def rank_processes(self) -> list[tuple[psutil.Process, dict]]:
        """The training processes running now (descendants of horovodrun with HOROVOD_RANK set), each with
        its environment: HOROVOD_RANK (the rank it was started as) and HOROVOD_HOSTNAME (its host)."""
        found = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                # the shell horovodrun starts has the same environment: take the Python process under it
                env = p.environ()
                if "HOROVOD_RANK" in env and p.name() not in ("sh", "bash", "env"):
                    found.append((p, env))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def rank_process(self, rank: int) -> psutil.Process:
        """The training process started as ``rank``."""
        for p, env in self.rank_processes():
            if env["HOROVOD_RANK"] == str(rank):
                return p
        raise AssertionError(f"no process for rank {rank}")

    def wait(self, timeout: float) -> int:
        """The launcher's exit code; fails the test if the job runs past ``timeout`` seconds."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the job did not end within {timeout} s:\n{self.text[-4000:]}")
        self._close()
        return code

    def _close(self):
        """Read the output to its end and close the pipe (left open, it is an unraisable ResourceWarning,
        an error under this suite's warning filter, when the garbage collector finds it)."""
        self._reader.join(timeout=10)
        if not self._reader.is_alive() and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def kill(self):
        """End the launcher and every process of this job (its ranks included)."""
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
        self._close()


@pytest.fixture
def horovod_job():
    """Starts ``HorovodJob``s; any still running when the test ends is killed."""
    jobs: list[HorovodJob] = []

    def start(launcher: list[str], out: Path, train: list[str]) -> HorovodJob:
        jobs.append(HorovodJob(launcher, out, train))
        return jobs[-1]

    yield start
    for job in jobs:
        if job.proc.poll() is None:
            job.kill()
        else:
            job._close()
