"""Resumable downloads against an HTTP server on 127.0.0.1 started by the test (never the internet):
Range resume after dropped connections and across runs, servers that ignore ranges, HTTP errors,
checksum verification, the base-URL override."""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from deeppose_fast.datasets import download as dl


class FileServer:
    """Serves ``files`` (name -> bytes) with Range support. ``drops[name]`` is a list of byte counts:
    each request for that name pops one and closes the connection after sending that many bytes."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.drops: dict[str, list[int]] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                data = server.files[name]
                start = 0
                if rng and not server.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                drops = server.drops.get(name)
                if drops:
                    self.wfile.write(body[: drops.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True  # the client sees a short body
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def payload():
    return np.random.default_rng(0).integers(0, 256, size=3 * dl.CHUNK + 12345, dtype=np.uint8).tobytes()


def fetch(server, name, folder, **kw):
    return dl.download(f"{server.url}/{name}", folder, progress=False, backoff=0.0, **kw)


def test_plain_download(tmp_path, payload):
    with FileServer({"a.zip": payload}) as server:
        path, digest = fetch(server, "a.zip", tmp_path)
    assert path.read_bytes() == payload
    assert digest == hashlib.sha256(payload).hexdigest()
    assert not (tmp_path / "a.zip.part").exists()


def test_resumes_after_dropped_connections(tmp_path, payload):
    with FileServer({"a.zip": payload}) as server:
        server.drops["a.zip"] = [1_000_000, 700_000]
        path, digest = fetch(server, "a.zip", tmp_path, sha256=hashlib.sha256(payload).hexdigest())
    assert path.read_bytes() == payload
    assert server.requests == [("a.zip", None), ("a.zip", "bytes=1000000-"), ("a.zip", "bytes=1700000-")]


def test_resumes_a_part_file_from_an_earlier_run(tmp_path, payload):
    (tmp_path / "a.zip.part").write_bytes(payload[:4321])
    with FileServer({"a.zip": payload}) as server:
        path, _ = fetch(server, "a.zip", tmp_path)
    assert path.read_bytes() == payload
    assert server.requests == [("a.zip", "bytes=4321-")]


def test_complete_part_file_gets_416_and_is_kept(tmp_path, payload):
    (tmp_path / "a.zip.part").write_bytes(payload)
    with FileServer({"a.zip": payload}) as server:
        path, _ = fetch(server, "a.zip", tmp_path)
    assert path.read_bytes() == payload and len(server.requests) == 1


def test_server_ignoring_range_restarts(tmp_path, payload):
    (tmp_path / "a.zip.part").write_bytes(b"x" * 999)  # wrong bytes: must not be kept
    with FileServer({"a.zip": payload}) as server:
        server.ignore_range = True
        path, _ = fetch(server, "a.zip", tmp_path)
    assert path.read_bytes() == payload


def test_existing_complete_file_is_not_fetched(tmp_path, payload):
    (tmp_path / "a.zip").write_bytes(payload)
    with FileServer({"a.zip": payload}) as server:
        _, digest = fetch(server, "a.zip", tmp_path)
    assert server.requests == [] and digest == hashlib.sha256(payload).hexdigest()


def test_http_error_names_the_url(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(dl.DownloadError, match=r"/missing.zip: HTTP 404"):
            fetch(server, "missing.zip", tmp_path)


def test_checksum_mismatch(tmp_path, payload):
    with FileServer({"a.zip": payload}) as server:
        with pytest.raises(dl.DownloadError, match="sha256 of the download is"):
            fetch(server, "a.zip", tmp_path, sha256="0" * 64)
    assert not (tmp_path / "a.zip").exists() and (tmp_path / "a.zip.bad").exists()


def test_gives_up_when_connection_keeps_dropping(tmp_path, payload):
    with FileServer({"a.zip": payload}) as server:
        server.drops["a.zip"] = [0] * 10
        with pytest.raises(dl.DownloadError, match="run again to resume"):
            fetch(server, "a.zip", tmp_path, retries=2)
    assert len(server.requests) == 3


def test_connection_refused(tmp_path):
    with FileServer({}) as server:
        url = server.url
    with pytest.raises(dl.DownloadError, match="cannot connect"):
        dl.download(f"{url}/a.zip", tmp_path, progress=False, retries=1, backoff=0.0)


def test_fetch_archives_with_base_url_from_environment(tmp_path, monkeypatch, payload):
    files = {"lsp_dataset_original.zip": payload[:1000], "lspet_dataset.zip": payload[1000:3000]}
    with FileServer(files) as server:
        monkeypatch.setenv(dl.BASE_URL_ENV, server.url + "/")
        sums = dl.fetch_archives("lsp-ext", tmp_path, progress=True)
    assert sums == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert (tmp_path / "lspet_dataset.zip").read_bytes() == files["lspet_dataset.zip"]


def test_official_addresses(monkeypatch):
    monkeypatch.delenv(dl.BASE_URL_ENV, raising=False)
    assert dl.archive_url(dl.ARCHIVES["mpii"][1]) == \
        "https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1_u12_2.zip"
    assert dl.archive_url(dl.ARCHIVES["lsp"][0], "http://mirror/x") == "http://mirror/x/lsp_dataset_original.zip"
    with pytest.raises(ValueError, match="no official download"):
        dl.fetch_archives("synthetic", "unused")
