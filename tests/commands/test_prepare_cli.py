"""`deeppose-fast prepare`: options reach prepare(), the default output folder, warnings as plain lines,
and errors as one clear line (exit code 1, no traceback)."""
from __future__ import annotations

import functools
import hashlib
import json
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

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
                 "--max-rotation", 20, "--max-scale-jitter", 0.25, "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precrop"] == {**manifest["precrop"], "enabled": True, "jpeg_quality": 80, "ext_max": 1.5,
                                   "rotation": 20.0, "scale_jitter": 0.25}


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
    result = run("synthetic", "--preset", "huge", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "unknown preset 'huge'" in result.output
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
