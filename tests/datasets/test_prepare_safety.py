"""prepare() into a folder that already holds things, and runs that fail or stop half-way.

The new data set is built beside the old one and swapped in when complete; nothing prepare did not write is
deleted; a folder holding another data set is refused unless ``replace=True``; a bad archive or annotation
file and an interrupt leave nothing of the run behind; an unwritable output folder is refused up front.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest

from deeppose_fast.datasets import DatasetError, DatasetWarning, shards, synthetic
from deeppose_fast.datasets import prepare as P


def prep(name, out, **kwargs):
    """``prepare`` on one thread without progress bars, the expected skip warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return P.prepare(name, out, workers=1, progress=False, **kwargs)


def snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder`` (hidden ones included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def shard_files(manifest: dict) -> set:
    """The shard and index names a manifest lists."""
    names = {n for entry in manifest["splits"].values() for n in entry["shards"]}
    return names | {shards.index_path(n).name for n in names}


def user_files(out: Path) -> dict:
    """Files a user keeps in an output folder; prepare must never delete or change them."""
    files = {"notes.txt": b"my notes", "train-backup.tar": b"a backup, not a shard",
             "test-old.idx": b"an old index", "raw/mine.txt": b"my raw file"}
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return files


def truncated_zip(path: Path, member: str = "joints.mat") -> Path:
    """A zip cut before its central directory: the local header magic is there, the end record is not."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, b"0" * 5000)
    path.write_bytes(path.read_bytes()[:-30])
    return path


def no_temporaries(out: Path) -> bool:
    return not list(out.glob(".prepare-tmp-*"))


# -------------------------------------------------------------------------------------------------
def test_files_prepare_did_not_write_survive_runs_and_reruns(tmp_path, synthetic_mpii_dir):
    out = tmp_path / "out"
    out.mkdir()
    mine = user_files(out)
    first = prep("synthetic", out, source=[synthetic_mpii_dir])
    # a re-run with the same data set and settings replaces it (a different shard size is only layout)
    again = prep("synthetic", out, source=[synthetic_mpii_dir], records_per_shard=4)
    assert len(again["splits"]["train"]["shards"]) > len(first["splits"]["train"]["shards"])
    assert shards.read_manifest(out)["splits"] == again["splits"]
    files = snapshot(out)
    assert {k: files[k] for k in mine} == mine
    # exactly the user's files, the new shards and the manifest: the old shards are gone
    assert set(files) == set(mine) | shard_files(again) | {shards.MANIFEST}


def test_generated_data_never_replaces_a_raw_folder_prepare_did_not_write(tmp_path):
    out = tmp_path / "out"
    (out / "raw").mkdir(parents=True)
    (out / "raw" / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=f"{out / 'raw'}: .*not written by prepare"):
        prep("synthetic", out, num_images=6)
    assert snapshot(out) == {"raw/mine.txt": b"keep me"}


def test_prepares_own_generated_raw_is_replaced_when_the_new_one_is_complete(tmp_path):
    out = tmp_path / "out"
    prep("synthetic", out, num_images=6)
    assert len(synthetic.Truth.load(out / "raw").image_names) > 0
    prep("synthetic", out, num_images=9, replace=True)
    truth = synthetic.Truth.load(out / "raw")
    assert len(set(truth.image_names.tolist())) == 9
    assert len(list((out / "raw" / "images").iterdir())) == 9
    assert no_temporaries(out)


def test_another_data_set_is_refused_unless_replace(tmp_path, synthetic_mpii_dir, synthetic_lsp_dir):
    out = tmp_path / "out"
    prep("synthetic", out, source=[synthetic_mpii_dir])
    before = snapshot(out)
    with pytest.raises(DatasetError) as err:
        prep("lsp", out, source=[synthetic_lsp_dir])
    message = str(err.value)
    assert str(out) in message and "--replace" in message and "name 'synthetic' -> 'lsp'" in message
    with pytest.raises(DatasetError, match=r"precrop.jpeg_quality 95 -> 80.*--replace"):
        prep("synthetic", out, source=[synthetic_mpii_dir], rule=P.PrecropRule(jpeg_quality=80))
    assert snapshot(out) == before and no_temporaries(out)

    (out / "notes.txt").write_text("keep me")
    new = prep("lsp", out, source=[synthetic_lsp_dir], replace=True)
    assert set(snapshot(out)) == shard_files(new) | {shards.MANIFEST, "notes.txt"}
    assert shards.read_manifest(out)["name"] == "lsp"


def test_a_data_set_of_an_older_shard_format_is_rebuilt_only_with_replace(tmp_path, synthetic_mpii_dir):
    """A folder prepared by a version writing shard format 1 (no stored scale): readers refuse it with the
    command that rebuilds it, prepare leaves it alone without --replace and rebuilds it with it."""
    out = tmp_path / "out"
    prep("synthetic", out, source=[synthetic_mpii_dir])
    manifest = shards.read_manifest(out)
    (out / shards.MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
    before = snapshot(out)
    with pytest.raises(shards.ShardError, match=rf"shard format 1, .*`deeppose-fast prepare synthetic --out {out}"
                                                rf".* --replace`"):
        shards.Manifest.read(out)
    with pytest.raises(DatasetError, match=r"holds a data set in shard format 1 .*--replace"):
        prep("synthetic", out, source=[synthetic_mpii_dir])
    assert snapshot(out) == before
    prep("synthetic", out, source=[synthetic_mpii_dir], replace=True)
    assert shards.Manifest.read(out).count("train") == manifest["splits"]["train"]["count"]


def test_a_foreign_manifest_or_stray_shards_need_replace(tmp_path, synthetic_mpii_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("not json")
    with pytest.raises(DatasetError, match=f"{out / 'manifest.json'}: .*--replace"):
        prep("synthetic", out, source=[synthetic_mpii_dir])
    (out / "manifest.json").unlink()
    (out / "train-00000.tar").write_bytes(b"someone's shard")
    (out / "train-00007.tar").write_bytes(b"someone else's")
    with pytest.raises(DatasetError, match=r"train-00000.tar.*--replace"):
        prep("synthetic", out, source=[synthetic_mpii_dir])
    assert snapshot(out) == {"train-00000.tar": b"someone's shard", "train-00007.tar": b"someone else's"}
    manifest = prep("synthetic", out, source=[synthetic_mpii_dir], replace=True)
    assert shards.read_manifest(out)["splits"] == manifest["splits"]
    assert (out / "train-00007.tar").read_bytes() == b"someone else's"  # not in the new set's way


def test_truncated_zip_is_named_and_leaves_nothing(tmp_path):
    archive = truncated_zip(tmp_path / "lsp_dataset_original.zip")
    out = tmp_path / "new" / "out"
    with pytest.raises(DatasetError, match=f"{archive}: truncated or corrupt zip archive"):
        prep("lsp", out, source=[archive])
    assert not (tmp_path / "new").exists()  # the folders this run created are gone again
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="truncated or corrupt zip archive"):
        prep("lsp", out, source=[archive])
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # no raw/, no temporary folder


def test_bad_mat_in_an_archive_is_named_and_leaves_nothing(tmp_path, synthetic_lsp_dir):
    archive = tmp_path / "lsp_dataset_original.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("joints.mat", "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 12\n")
        for img in sorted((synthetic_lsp_dir / "images").iterdir()):
            zf.write(img, f"images/{img.name}")
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"lsp_dataset_original.zip/joints.mat: not a readable MATLAB file"):
        prep("lsp", out, source=[archive])
    assert not out.exists()


def test_interrupted_first_run_leaves_nothing(tmp_path, synthetic_mpii_dir, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(P, "_process_image", interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prep("synthetic", out, source=[synthetic_mpii_dir])
    assert not out.exists()


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys (not writable, even for root)")
def test_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    def never(*args, **kwargs):  # pragma: no cover - reached only when the check comes too late
        raise AssertionError("generation started before the output folder was checked")

    monkeypatch.setattr(synthetic, "generate", never)
    out = Path("/sys/deeppose-fast-test/out")
    with pytest.raises(DatasetError, match=f"{out}: cannot write the output folder"):
        prep("synthetic", out, num_images=6)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "generate", lambda *a, **k: pytest.fail("generation started"))
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(DatasetError, match=f"{out}: cannot write the output folder"):
            prep("synthetic", out, num_images=6)
    finally:
        out.chmod(0o755)


def test_rerun_reuses_generated_images_and_removes_only_dead_runs_temporaries(tmp_path):
    out = tmp_path / "out"
    prep("synthetic", out, num_images=6)
    images = {p: p.stat().st_mtime_ns for p in (out / "raw" / "images").iterdir()}
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, running = out / f".prepare-tmp-{host}-{dead.pid}", out / f".prepare-tmp-{host}-{os.getppid()}"
    for folder in (stale, running):
        (folder / "raw").mkdir(parents=True)
    prep("synthetic", out, num_images=6)
    assert {p: p.stat().st_mtime_ns for p in (out / "raw" / "images").iterdir()} == images
    assert not stale.exists() and running.is_dir()  # a live process's folder is not touched
