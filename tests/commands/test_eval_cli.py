"""`deeppose-fast eval`: what goes wrong with the data set or the output is one line naming the path and
the fix, found before the sweep runs: a damaged data set, an output folder that cannot be written, and a
run evaluated from another directory than the one it was trained in."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from deeppose_fast import checkpoint
from deeppose_fast.cli import main
from deeppose_fast.datasets import shards
from deeppose_fast.datasets.precrop import PrecropRule
from deeppose_fast.specs import ModelSpec
from deeppose_fast.testing import dots, runs

S = 67
SWEEP_STARTED = "=== extension"  # what score_checkpoint prints once the first extension is scored


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A training folder as `train` leaves it: ``data/dots`` (prepared) and ``runs/tiny`` holding a
    checkpoint whose config records both as relative paths."""
    root = tmp_path_factory.mktemp("project")
    dots.make_dot_dataset(root / "data" / "dots", num_train=4, num_test=6, records_per_shard=4, seed=1)
    runs.save_initial_run(root / "runs" / "tiny", ModelSpec(input_size=S, width=0.25, fc_units=8, dropout=0.0),
                          step=1, config={"data": "data/dots", "out": "runs/tiny"})
    return root


def evaluate(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args), "--extensions", "2.0", "--batch-size", "8"])


def assert_one_line_error(r, *parts):
    """A click error (exit 1, no exception escaping), one line, naming each of ``parts``."""
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for part in parts:
        assert part in r.output, r.output


def test_eval_of_a_run_writes_its_json(project, monkeypatch):
    monkeypatch.chdir(project)
    loads, load = [], checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda *args: loads.append(args) or load(*args))
    r = evaluate("runs/tiny")
    assert r.exit_code == 0, r.output
    assert len(loads) == 1  # read once: for its recorded data, the JSON's place and the network
    doc = json.loads(next((project / "runs" / "tiny" / "checkpoints").glob("ckpt-*/eval-test.json")).read_text())
    assert doc["data"] == "data/dots" and doc["reports"][0]["num_people"] == 6


@pytest.mark.parametrize("damage", ["invalid JSON", "missing shard", "truncated shard"])
def test_a_damaged_data_set_is_one_line(project, tmp_path, damage):
    data = tmp_path / "dots"
    shutil.copytree(project / "data" / "dots", data)
    if damage == "invalid JSON":
        (data / "manifest.json").write_text("{not json")
        named = f"{data / 'manifest.json'}: not valid JSON"
    elif damage == "missing shard":
        (data / "test-00001.tar").unlink()
        named = f"{data / 'test-00001.tar'}: shard listed in {data / 'manifest.json'} is missing"
    else:
        with open(data / "test-00000.tar", "r+b") as f:
            f.truncate(1000)
        named = f"{data / 'test-00000.tar'}: truncated or corrupt"
    r = evaluate(project / "runs" / "tiny", "--data", data, "--json", tmp_path / "out.json")
    assert_one_line_error(r, named, "deeppose-fast prepare")
    assert not (tmp_path / "out.json").exists()


def test_an_output_folder_that_cannot_be_written_stops_before_the_sweep(project, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the folder should be")
    r = evaluate(project / "runs" / "tiny", "--data", project / "data" / "dots", "--json", blocker / "eval.json")
    assert_one_line_error(r, f"{blocker}: cannot write eval.json there", "--json PATH")
    assert SWEEP_STARTED not in r.output


def test_a_read_only_run_stops_before_the_sweep(project, tmp_path):
    """The default JSON goes beside the checkpoint: a read-only run folder is found out first."""
    run = tmp_path / "run"
    shutil.copytree(project / "runs" / "tiny", run)
    (ckpt,) = (run / "checkpoints").glob("ckpt-*")
    ckpt.chmod(0o555)
    try:
        probe = ckpt / "probe"
        try:
            probe.write_text("")
            probe.unlink()
            pytest.skip("this user writes into read-only folders (root): covered by the test above")
        except PermissionError:
            pass
        r = evaluate(run, "--data", project / "data" / "dots")
    finally:
        ckpt.chmod(0o755)
    assert_one_line_error(r, f"{ckpt}: cannot write eval-test.json there", "--json PATH")


def test_a_run_evaluated_from_elsewhere_finds_its_data(project, tmp_path, monkeypatch):
    """The recorded ``data/dots`` is not under the current directory: it is taken from the folder training
    ran in (the run folder minus the recorded ``out``), and eval says so."""
    monkeypatch.chdir(tmp_path)
    r = evaluate(project / "runs" / "tiny", "--json", tmp_path / "eval.json")
    assert r.exit_code == 0, r.output
    assert f"using {project / 'data' / 'dots'}, the same path from the folder training ran in" in r.output
    assert json.loads((tmp_path / "eval.json").read_text())["data"] == str(project / "data" / "dots")


def test_a_run_whose_data_is_nowhere_suggests_data(project, tmp_path, monkeypatch):
    run = tmp_path / "moved"  # no longer under the training folder: nothing to infer
    shutil.copytree(project / "runs" / "tiny", run)
    monkeypatch.chdir(tmp_path)
    r = evaluate(run)
    assert_one_line_error(r, "data/dots: the data set recorded in", f"current directory ({tmp_path})",
                          "pass --data DIR")
    assert "not prepared" not in r.output


def test_a_sweep_needing_more_resolution_than_stored_is_refused(project, tmp_path):
    """Regions stored for crops of extension 1.5 and more: an extension 1.2 crop would be upsampled from
    them, so the sweep is refused before it starts, naming the prepare option that stores enough."""
    data = shutil.copytree(project / "data" / "dots", tmp_path / "dots")
    shards.Manifest.read(data).replace(precrop=PrecropRule(ext_min=1.5).to_dict()).write(data)
    r = CliRunner().invoke(main, ["eval", str(project / "runs" / "tiny"), "--data", str(data),
                                  "--extensions", "1.2,2.0", "--batch-size", "8", "--json", str(tmp_path / "e.json")])
    assert_one_line_error(r, str(data / "manifest.json"), "smallest extension 1.2", "--min-extension 1.2")
    assert not (tmp_path / "e.json").exists()
    r = CliRunner().invoke(main, ["eval", str(project / "runs" / "tiny"), "--data", str(data),
                                  "--extensions", "1.5,2.0", "--batch-size", "8", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
