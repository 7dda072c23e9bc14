"""`deeppose-fast cascade-stats RUN`: the statistics file it writes is the library's ``statistics.fit`` of
the stage-1 network's estimates on the *training* split (computed here independently with
``scoring.predict_split``), loadable with its ``stage_source``; what goes wrong is one line naming the file."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from deeppose_fast import checkpoint, scoring
from deeppose_fast import skeleton as skeleton_lib
from deeppose_fast.cascade import statistics
from deeppose_fast.cli import main
from deeppose_fast.datasets import shards
from deeppose_fast.specs import ModelSpec
from deeppose_fast.testing import dots, runs

S = 67
EXT = 1.5  # the run's recorded test crop extension (eval_extension), which the command must use


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """``data/dots`` (train 5 people, test 3) and ``runs/tiny`` with one checkpoint recording both."""
    root = tmp_path_factory.mktemp("project")
    dots.make_dot_dataset(root / "data" / "dots", num_train=5, num_test=3, records_per_shard=4, seed=2)
    runs.save_initial_run(root / "runs" / "tiny", ModelSpec(input_size=S, width=0.25, fc_units=8, dropout=0.0),
                          step=7, config={"data": "data/dots", "out": "runs/tiny", "eval_extension": EXT})
    return root


def cascade_stats(*args):
    return CliRunner().invoke(main, ["cascade-stats", *map(str, args), "--batch-size", "4"])


def assert_one_line_error(r, *parts):
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for part in parts:
        assert part in r.output, r.output


def test_the_statistics_are_the_library_fit_of_the_training_split(project, monkeypatch):
    monkeypatch.chdir(project)
    loads, load = [], checkpoint.load
    monkeypatch.setattr(checkpoint, "load", lambda *args: loads.append(args) or load(*args))
    r = cascade_stats("runs/tiny")
    assert r.exit_code == 0, r.output
    assert len(loads) == 1
    path = project / "runs" / "tiny" / statistics.DEFAULT_FILE
    assert f"wrote {path.relative_to(project)}" in r.output
    ckpt = load(project / "runs" / "tiny")
    data = project / "data" / "dots"
    expect = statistics.stage_source(stage=2, checkpoint=ckpt.path, step=7, data=data)
    stats = statistics.load(path, expect=expect)

    # independently: the network over the train split's evaluation crops at the run's extension
    model = checkpoint.build_model(ckpt)
    preds = scoring.predict_split(model, data, extension=EXT, split="train", batch_size=4)
    assert len(preds["pred"]) == 5
    ref = statistics.fit(preds["pred"], preds["gt"], skeleton_lib.get("lsp"), source=expect)
    np.testing.assert_allclose(stats.mean, ref.mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.cov, ref.cov, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(stats.count, ref.count)
    assert stats.skeleton == "lsp" and stats.source == ref.source

    # the table: one row per joint, its count, the mean in torso diameters
    names = skeleton_lib.get("lsp").joint_names
    rows = [line.split() for line in r.output.splitlines() if line.split()[:1] and line.split()[0] in names]
    assert [row[0] for row in rows] == list(names)
    for j, row in enumerate(rows):
        assert int(row[-1]) == ref.count[j]
        assert float(row[1]) == pytest.approx(ref.mean[j, 0], abs=6e-5)
        assert float(row[3]) == pytest.approx(np.sqrt(ref.cov[j, 0, 0]), abs=6e-5)


def test_out_and_a_checkpoint_folder(project, tmp_path):
    (ckpt,) = (project / "runs" / "tiny" / "checkpoints").glob("ckpt-*")
    out = tmp_path / "sub" / "stats.json"
    r = cascade_stats(ckpt, "--data", project / "data" / "dots", "--extension", "2.0", "--out", out)
    assert r.exit_code == 0, r.output
    stats = statistics.load(out, expect=statistics.stage_source(stage=2, checkpoint=ckpt, step=7,
                                                                 data=project / "data" / "dots"))
    assert "extension 2" in r.output and int(stats.count.max()) == 5
    with pytest.raises(statistics.StaleStatsError, match="step 7 where 8 was expected"):
        statistics.load(out, expect=statistics.stage_source(stage=2, checkpoint=ckpt, step=8,
                                                            data=project / "data" / "dots"))


def test_a_missing_run_is_one_line(tmp_path):
    r = cascade_stats(tmp_path / "nowhere")
    assert_one_line_error(r, f"{tmp_path / 'nowhere'}: no such checkpoint or run folder")


def test_a_run_without_checkpoints_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cascade_stats(tmp_path / "empty")
    assert_one_line_error(r, f"{tmp_path / 'empty'}: holds no checkpoint")


def test_a_data_set_without_a_train_split_is_one_line(project, tmp_path):
    data = tmp_path / "testonly"
    dots.make_dot_dataset(data, num_train=0, num_test=3, records_per_shard=4, seed=3)
    r = cascade_stats(project / "runs" / "tiny", "--data", data, "--out", tmp_path / "s.json")
    assert_one_line_error(r, f"{data / shards.MANIFEST}: no split 'train'")
    assert not (tmp_path / "s.json").exists()


def test_an_unwritable_out_stops_before_the_work(project, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the folder should be")
    r = cascade_stats(project / "runs" / "tiny", "--data", project / "data" / "dots", "--out", blocker / "s.json")
    assert_one_line_error(r, f"{blocker}: cannot write s.json there", "--out FILE")
    assert "checkpoint" not in r.output  # stopped before the network ran


def test_a_joint_with_too_few_people_is_one_line(project, tmp_path):
    """One training person: no covariance can be fitted; the error names the data set's manifest."""
    data = tmp_path / "one"
    dots.make_dot_dataset(data, num_train=1, num_test=2, records_per_shard=4, seed=4)
    r = cascade_stats(project / "runs" / "tiny", "--data", data, "--out", tmp_path / "s.json")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    # found after the network ran: the progress line, then the error, one line
    *progress, error = r.output.strip().splitlines()
    assert "Traceback" not in r.output and len(progress) == 1 and progress[0].startswith("checkpoint "), r.output
    assert error.startswith(f"Error: {data / shards.MANIFEST}: split 'train': too few people"), error
    assert "'r_ankle' (index 0): 1" in error and "of 1 people" in error
    assert not (tmp_path / "s.json").exists()
    assert json.loads((data / shards.MANIFEST).read_text())  # untouched
