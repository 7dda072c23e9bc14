"""`deeppose-fast prepare`: options reach prepare(), the default output folder, warnings as plain lines,
and errors as one clear line (exit code 1, no traceback)."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from deeppose_fast.cli import main
from deeppose_fast.datasets import shards, synthetic


@pytest.fixture(scope="module")
def synthetic_mpii_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpii")
    synthetic.write_mpii(root, 16, seed=1, image_size=(240, 180), workers=1)
    return root


def run(*args):
    return CliRunner().invoke(main, ["prepare", *map(str, args)])


def test_synthetic_default_out_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("synthetic", "--size", 14, "--quiet", "--records-per-shard", 5, "--seed", 3)
    assert result.exit_code == 0, result.output
    out = tmp_path / "data" / "synthetic"
    manifest = shards.read_manifest(out)
    assert manifest["synthetic"]["num_images"] == 14 and manifest["seed"] == 3
    assert all(len(shards_) for shards_ in [manifest["splits"]["train"]["shards"]])
    assert f"-> {out}" in result.output
    assert "warning: synthetic" in result.output  # test images of the generator are reported as skipped
    assert "Traceback" not in result.output


def test_options_reach_the_manifest(tmp_path, synthetic_mpii_dir):
    out = tmp_path / "o"
    result = run("mpii", "--source", synthetic_mpii_dir, "--out", out, "--no-precrop", "--split-mode", "image",
                 "--quiet", "--workers", 1)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precrop"]["enabled"] is False and manifest["split_mode"] == "image"
    result = run("mpii", "--source", synthetic_mpii_dir, "--out", out, "--jpeg-quality", 80, "--ext-max", 1.5,
                 "--max-rotation", 20, "--max-scale-jitter", 0.25, "--max-shift", 0.15, "--quiet", "--replace")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precrop"] == {**manifest["precrop"], "enabled": True, "jpeg_quality": 80, "ext_max": 1.5,
                                   "rotation": 20.0, "scale_jitter": 0.25, "shift": 0.15}


def test_errors_are_one_line(tmp_path):
    result = run("mpii", "--source", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "nowhere: --source does not exist" in result.output
    folder = tmp_path / "lsp"
    folder.mkdir()
    scipy.io.savemat(str(folder / "joints.mat"), {"joints": np.zeros((5, 14, 3))})
    result = run("lsp", "--source", folder, "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert f"Error: {folder / 'joints.mat'}: 'joints' has shape (5, 14, 3)" in result.output
    assert "Traceback" not in result.output
    result = run("lsp", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "give --source" in result.output
    result = run("synthetic", "--scale", "huge", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "unknown scale 'huge'" in result.output
    result = run("flic")
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_download_from_a_mirror(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    lsp = tmp_path / "lsp"
    synthetic.write_lsp(lsp, 6, seed=2, workers=1)
    with zipfile.ZipFile(served / "lsp_dataset_original.zip", "w") as zf:
        zf.write(lsp / "joints.mat", "joints.mat")
        for img in sorted((lsp / "images").iterdir()):
            zf.write(img, f"images/{img.name}")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:  # the mirror address through the environment variable
        monkeypatch.setenv("DEEPPOSE_FAST_DATA_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
        result = run("lsp", "--download", "--out", tmp_path / "o", "--quiet")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.exit_code == 0, result.output
    manifest = shards.read_manifest(tmp_path / "o")
    assert manifest["splits"]["train"]["count"] == 3 and manifest["splits"]["test"]["count"] == 3
    digest = hashlib.sha256((served / "lsp_dataset_original.zip").read_bytes()).hexdigest()
    assert manifest["sources"]["lsp_dataset_original.zip"] == digest


def assert_one_line_error(result, *words):
    """Exit code 1, one ``Error:`` line holding every word, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert all(str(w) in lines[0] for w in words), result.output
    assert "Traceback" not in result.output


def test_another_data_set_is_refused_naming_replace(tmp_path, synthetic_mpii_dir):
    out = tmp_path / "o"
    assert run("mpii", "--source", synthetic_mpii_dir, "--out", out, "--quiet").exit_code == 0
    before = (out / "manifest.json").read_bytes()
    result = run("mpii", "--source", synthetic_mpii_dir, "--out", out, "--quiet", "--no-precrop")
    assert_one_line_error(result, out, "another data set", "--replace")
    assert (out / "manifest.json").read_bytes() == before
    result = run("mpii", "--source", synthetic_mpii_dir, "--out", out, "--quiet", "--no-precrop", "--replace")
    assert result.exit_code == 0, result.output
    assert shards.read_manifest(out)["precrop"]["enabled"] is False


def test_truncated_zip_is_one_line(tmp_path):
    archive = tmp_path / "lsp_dataset_original.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("joints.mat", b"0" * 5000)
    archive.write_bytes(archive.read_bytes()[:-30])
    result = run("lsp", "--source", archive, "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(result, archive, "truncated or corrupt zip archive")
    assert not (tmp_path / "o").exists()


def test_mat_that_is_a_text_file_is_one_line(tmp_path):
    folder = tmp_path / "lsp"
    folder.mkdir()
    (folder / "joints.mat").write_text("version https://git-lfs.github.com/spec/v1\n")
    result = run("lsp", "--source", folder, "--out", tmp_path / "o", "--quiet")
    assert_one_line_error(result, folder / "joints.mat", "not a readable MATLAB file")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys (not writable, even for root)")
def test_unwritable_out_is_one_line(tmp_path):
    out = Path("/sys/deeppose-fast-test")
    result = run("synthetic", "--size", 6, "--out", out, "--quiet")
    assert_one_line_error(result, out, "cannot write the output folder", "--out")


def test_progress_for_generation_parsing_and_packing_unless_quiet(tmp_path):
    """Bars show even when stderr is not a terminal (a log file, CI), and --quiet hides them."""
    result = run("synthetic", "--size", 6, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert "generating synthetic mpii" in result.stderr and "/6 [" in result.stderr  # images done / total
    assert "parsing the synthetic annotations" in result.stderr and "packing synthetic" in result.stderr
    result = run("synthetic", "--size", 6, "--out", tmp_path / "b", "--quiet")
    assert result.exit_code == 0, result.output
    assert not any(word in result.stderr for word in ("generating", "parsing", "packing"))


def test_ctrl_c_during_generation_is_one_line_and_exit_130(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while two worker processes
    generate images: one line, exit code 130, no worker traceback, nothing that looks complete."""
    out = tmp_path / "o"
    (tmp_path / "o").mkdir()
    (out / "notes.txt").write_text("keep me")
    # Ctrl-C as a terminal delivers it, whatever this process inherited: a job started in the background
    # by a non-interactive shell ignores SIGINT, and Python keeps an ignored SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "deeppose_fast.cli", "prepare", "synthetic", "--size", "800",
                             "--workers", "2", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not list(out.rglob("*.jpg")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)  # the workers are busy now
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert f"interrupted; nothing was changed in {out}" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
