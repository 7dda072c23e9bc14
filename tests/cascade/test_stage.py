"""Training and evaluating a cascade stage (``train --stage 2 --from RUN``, ``eval`` of a stage-2 snapshot)
on a dot data set with a tiny stage-1 network: the run records its links and statistics, resumes exactly,
the cascade's stage-2 estimates equal an independent computation with the OpenCV reference crops, and every
bad input is one error naming the file, with nothing written."""
from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from deeppose_fast import checkpoint, codec, config, metrics, train
from deeppose_fast.cascade import evaluate, inference, links, stage, stage_stats, statistics
from deeppose_fast.cli import main
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import reference
from deeppose_fast.skeleton import LSP
from deeppose_fast.specs import ModelSpec
from deeppose_fast.testing import dots, runs

S = 67
EXT = 1.5
SPEC = ModelSpec(input_size=S, width=0.25, fc_units=8, dropout=0.0, init="he")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """``data/dots`` (train 12 people, test 4), ``runs/s1`` (one stage-1 checkpoint, step 7) and its stage-2
    statistics, fitted by ``cascade-stats``' code."""
    root = tmp_path_factory.mktemp("cascade")
    dots.make_dot_dataset(root / "data" / "dots", num_train=12, num_test=4, records_per_shard=5, seed=3)
    runs.save_initial_run(root / "runs" / "s1", SPEC, step=7,
                          config={"data": str(root / "data" / "dots"), "out": str(root / "runs" / "s1"),
                                  "eval_extension": EXT})
    stage_stats.fit_run(root / "runs" / "s1", batch_size=8, echo=lambda _: None)
    return root


def stage2_cfg(project, name, **kw):
    base = dict(data=str(project / "data" / "dots"), out=str(project / "runs" / name), stage=2,
                previous=str(project / "runs" / "s1"), sigma=1.0, **SPEC.to_dict(), batch_size=4,
                optimizer="adam", conv_lr=1e-3, fc_lr=1e-3, max_steps=4, eval_every=0, ckpt_every=2,
                log_every=2, data_segment_steps=3, progress=False, seed=5, tf_threads=1, num_threads=1,
                eval_batch_size=8)
    base.update(kw)
    return config.TrainConfig.from_dict(base)


def digest(result):
    return result["digest"]


def test_a_stage_2_run_records_its_links_and_statistics(project):
    result = train.train(stage2_cfg(project, "s2", eval_every=4))
    ckpt = checkpoint.load(project / "runs" / "s2")
    s1 = checkpoint.load(project / "runs" / "s1")
    assert ckpt.step == 4 and result["step"] == 4
    # the link is the one checkpoint stage 2 was trained on, not the run folder
    assert ckpt.meta["config"]["previous"] == str(s1.path.resolve())
    assert ckpt.meta["config"]["stage"] == 2
    own = statistics.load(project / "runs" / "s2" / stage.OWN_STATS)
    fitted = statistics.load(project / "runs" / "s1" / statistics.default_file(2))
    assert own == fitted
    log = (project / "runs" / "s2" / "train.log").read_text()
    assert "stage 2 of the cascade" in log and "initialised the network from stage 1" in log
    assert "stage 1 -> stage 2" in log  # the periodic evaluation runs the cascade
    curve = [json.loads(line) for line in (project / "runs" / "s2" / "eval_curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [4] and 0 <= curve[0]["mPCKh"] <= 1


def test_stage_2_starts_from_stage_1_weights(project):
    cfg = stage2_cfg(project, "s2-init", max_steps=1, conv_lr=0.0, fc_lr=0.0, optimizer="momentum")
    result = train.train(cfg)
    s1 = checkpoint.build_model(checkpoint.load(project / "runs" / "s1"))
    for a, b in zip(result["model"].trainable_weights, s1.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_joint_conditioned_stage_2_starts_from_stage_1_but_fc8(project):
    cfg = stage2_cfg(project, "s2-cond-init", max_steps=1, conv_lr=0.0, fc_lr=0.0, optimizer="momentum",
                     joint_input=True)
    net = train.train(cfg)["model"]
    s1 = checkpoint.build_model(checkpoint.load(project / "runs" / "s1"))
    for layer in s1.layers:
        if layer.weights and layer.name != "fc8":
            for a, b in zip(net.get_layer(layer.name).weights, layer.weights):
                np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=layer.name)
    assert net.get_layer("fc8").kernel.shape == (SPEC.fc_units, 2)
    assert not net.get_layer("joint6").embeddings.numpy().any()
    log = (project / "runs" / "s2-cond-init" / "train.log").read_text()
    assert "(all but joint6, joint7, fc8)" in log


def test_resume_of_a_stage_2_run_gives_the_same_weights(project):
    whole = train.train(stage2_cfg(project, "s2-whole"))
    train.train(stage2_cfg(project, "s2-parts", max_steps=2))
    resumed = train.train(stage2_cfg(project, "s2-parts"), resume=True)
    assert resumed["step"] == 4 and digest(resumed) == digest(whole)


def _expect_refusal(project, name, match, **kw):
    out = project / "runs" / name
    with pytest.raises(ValueError, match=match) as e:
        train.train(stage2_cfg(project, name, **kw))
    assert not out.exists()  # refused before anything was written
    assert "Traceback" not in str(e.value) and "\n" not in str(e.value)
    return str(e.value)


def test_a_stage_2_without_a_stage_1_run_is_refused(project):
    msg = _expect_refusal(project, "no-s1", "there is none", previous=str(project / "runs" / "absent"))
    assert str(project / "runs" / "absent") in msg and "--previous RUN" in msg


def test_missing_or_stale_statistics_are_refused(project, tmp_path):
    msg = _expect_refusal(project, "no-stats", "not fitted yet", stats=str(tmp_path / "none.json"))
    assert str(tmp_path / "none.json") in msg and statistics.REFIT_COMMAND in msg
    # statistics fitted for another checkpoint of stage 1 (the run trained on since): stale
    other = tmp_path / "s1-copy"
    shutil.copytree(project / "runs" / "s1", other)
    src = other / "checkpoints" / "ckpt-00000007"
    src.rename(other / "checkpoints" / "ckpt-00000008")
    _expect_refusal(project, "stale", "stale displacement statistics", previous=str(other),
                    stats=str(project / "runs" / "s1" / statistics.default_file(2)))


def test_statistics_of_another_data_set_are_refused(project, tmp_path):
    # the same skeleton, another data set: the statistics were fitted on the stage-1 run's data
    other = dots.make_dot_dataset(tmp_path / "other", num_train=6, num_test=2, seed=9)
    msg = _expect_refusal(project, "other-dots", "stale displacement statistics", data=str(other))
    assert "manifest_sha256" in msg and str(other.resolve()) in msg


def test_a_stage_1_run_of_another_skeleton_is_refused(project, tmp_path):
    mpii = dots.make_dot_dataset(tmp_path / "mpii", num_train=4, num_test=2, skeleton="mpii", seed=1)
    msg = _expect_refusal(project, "other-data", "holds mpii poses", data=str(mpii))
    assert str(mpii / shards.MANIFEST) in msg


def test_a_stage_1_checkpoint_named_as_stage_2_s_previous_must_be_stage_1(project):
    train.train(stage2_cfg(project, "s2-for-s3"))
    _expect_refusal(project, "bad-stage", "a stage-2 checkpoint; stage 2 is trained on stage 1",
                    previous=str(project / "runs" / "s2-for-s3"))


def test_train_cli_says_what_is_missing_in_one_line(project, monkeypatch):
    monkeypatch.chdir(project)
    r = CliRunner().invoke(main, ["train", "--stage", "2", "--from", "runs/absent", "--data", "data/dots",
                                  "--out", "runs/cli", "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "runs/absent" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (project / "runs" / "cli").exists()


def _own_pair(net, ckpt, crop, k):
    """(2,) the output pair of joint ``k`` for one crop (S, S, 3); a joint-conditioned network is told k."""
    x = tf.constant(crop[None])
    inputs = [x, tf.constant([k], tf.int32)] if ckpt.model_spec.joint_input else x
    return net(inputs, training=False).numpy().reshape(-1, 2)[k]


def _independent_stage_2(project, ckpt2):
    """Stage 1 then stage 2 on the test split with the OpenCV reference's crops, written apart from the
    package's cascade: each joint's crop about stage 1's estimate, the stage-2 network's output pair of
    that joint, mapped back by the crop box."""
    s1 = checkpoint.build_model(checkpoint.load(project / "runs" / "s1"))
    s2 = checkpoint.build_model(ckpt2)
    out1, out2 = [], []
    for rec in shards.iter_records(project / "data" / "dots", "test"):
        scale, offset = rec.meta[shards.META_SCALE], rec.meta[4:6].astype(np.float64)
        img, g = reference.crop_sample(rec.jpeg, rec.pose, codec.eval_draws(EXT), size=S, scale=scale)
        t = s1(tf.constant(img[None]), training=False).numpy().reshape(14, 2)
        est = codec.decode(t, g.crop_box) + offset  # source pixels
        diam = LSP.torso_diameter(est)
        refined = np.empty_like(est)
        for k in range(14):
            centre = est[k] - offset
            draws = np.array([*centre, 1.0 * diam, 0.0, k], np.float32)
            img_k, g_k = reference.joint_crop_sample(rec.jpeg, rec.pose, draws, size=S, scale=scale)
            t_k = _own_pair(s2, ckpt2, img_k, k)
            refined[k] = codec.decode(t_k[None], g_k.crop_box)[0] + offset
        out1.append(est)
        out2.append(refined)
    return np.array(out1), np.array(out2)


CONDITIONED = pytest.mark.parametrize("joint_input", [False, True], ids=["pairs", "joint-conditioned"])


@CONDITIONED
def test_eval_of_a_stage_2_snapshot_runs_the_cascade(project, joint_input):
    name = f"s2-eval-{joint_input}"
    train.train(stage2_cfg(project, name, joint_input=joint_input))
    ckpt2 = checkpoint.load(project / "runs" / name)
    out = project / "runs" / name / "cascade.json"
    lines = []
    doc = evaluate.score_cascade(ckpt2, out_json=out, batch_size=8, echo=lines.append)
    assert [s["stage"] for s in doc["stages"]] == [1, 2]
    assert json.loads(out.read_text())["stages"][1]["checkpoint"] == str(ckpt2.path)
    png = cv2.imread(doc["curves_png"])
    assert png is not None and png.shape[0] > 200
    heads = [line.split() for line in "\n".join(lines).splitlines() if line.startswith("[")]
    # every table of both protocols, one column per stage
    assert {h[0] for h in heads} == {"[dtf]", "[official]"}
    assert all(h[-4:] == ["stage", "1", "stage", "2"] for h in heads), heads

    one, two = _independent_stage_2(project, ckpt2)
    preds = inference.predict(links.chain(ckpt2), project / "data" / "dots", extension=EXT, batch_size=8)
    side = (LSP.torso_diameter(one))[:, None, None]
    np.testing.assert_allclose(preds[0]["pred"], one, atol=2e-3 * side.max())
    np.testing.assert_allclose(preds[1]["pred"], two, atol=2e-2 * side.max())
    assert not np.allclose(preds[1]["pred"], preds[0]["pred"], atol=1e-3)  # stage 2 moved the joints
    # the JSON's fine figures are those of these estimates, computed here with metrics.evaluate
    reported = doc["stages"][1]["report"]["headline"]["mPCKh"]
    assert 0 <= reported <= 1
    for entry, p in zip(doc["stages"], preds):
        for threshold in (0.2, 0.5):
            r = metrics.evaluate(p["pred"], p["gt"], dataset="lsp", protocol="dtf", head_box=p["head_box"],
                                 threshold=threshold)
            assert entry["fine"][f"symmetric_pckh@{threshold:g}"] == pytest.approx(r.tables["Symmetric PCKh"].total)
        assert entry["fine"]["pckh_auc"] == pytest.approx(r.curve.auc) and np.isfinite(r.curve.auc)


def test_a_chain_with_a_missing_link_is_refused(project, tmp_path):
    train.train(stage2_cfg(project, "s2-orphan"))
    ckpt2 = checkpoint.load(project / "runs" / "s2-orphan")
    moved = tmp_path / "s1-moved"
    shutil.move(str(project / "runs" / "s1"), moved)
    try:
        with pytest.raises(links.CascadeError, match="stage 1 is missing") as e:
            evaluate.score_cascade(ckpt2, out_json=tmp_path / "x.json", echo=lambda _: None)
        assert str(ckpt2.path) in str(e.value)
        assert not (tmp_path / "x.json").exists()
    finally:
        shutil.move(str(moved), project / "runs" / "s1")


def _predict_with_stage_2(project, tmp_path, name, **settings):
    """A stage-2 run ``name`` (of ``settings``), a test photo of the dot set, and ``predict_files`` on it:
    ``(checkpoint, photo, (prediction, json path, png path))``."""
    from deeppose_fast import predict

    train.train(stage2_cfg(project, name, **settings))
    ckpt2 = checkpoint.load(project / "runs" / name)
    rec = next(shards.iter_records(project / "data" / "dots", "test"))
    photo = tmp_path / "person.jpg"
    photo.write_bytes(rec.jpeg)
    (result,) = predict.predict_files(ckpt2, [photo], out_dir=tmp_path / "out")
    return ckpt2, photo, result


@CONDITIONED
def test_predict_with_a_stage_2_snapshot_runs_the_cascade(project, tmp_path, joint_input):
    from deeppose_fast import predict

    ckpt2, photo, (pred, json_path, png_path) = _predict_with_stage_2(project, tmp_path, f"s2-predict-{joint_input}",
                                                                      joint_input=joint_input)
    doc = json.loads(json_path.read_text())
    assert [s["stage"] for s in doc["stages"]] == [1, 2] and cv2.imread(str(png_path)) is not None
    final = np.array([[j["x"], j["y"]] for j in doc["joints"]])
    np.testing.assert_array_equal(final, np.array(doc["stages"][1]["joints"]))

    # independently: stage 1 alone, then each joint's crop by the reference rule (codec.joint_crop_geometry,
    # the OpenCV warp) through the stage-2 network
    (one,) = predict.predict_images(checkpoint.build_model(checkpoint.load(project / "runs" / "s1")), [photo],
                                    extension=EXT)
    np.testing.assert_allclose(np.array(doc["stages"][0]["joints"]), one.joints, atol=1e-4)
    s2 = checkpoint.build_model(ckpt2)
    bgr = cv2.imread(str(photo))
    side = 1.0 * LSP.torso_diameter(one.joints)
    want = np.empty((14, 2))
    for k in range(14):
        g = codec.joint_crop_geometry(np.zeros((14, 4)), bgr.shape, one.joints[k], side, k, size=S)
        x = reference.warp(bgr, g, size=S)
        want[k] = codec.decode(_own_pair(s2, ckpt2, x, k)[None], g.crop_box)[0]
    np.testing.assert_allclose(final, want, atol=1e-2 * side)
    assert not np.allclose(final, one.joints, atol=1e-3)


def test_export_samples_joint_crops_as_the_opencv_warp():
    from deeppose_fast import export, predict
    from deeppose_fast.pipeline.contract import normalize_tf

    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (50, 70, 3)).astype(np.uint8)
    boxes = np.array([[10.0, 5.0, 30.0, 30.0], [-20.0, 30.0, 40.0, 40.0], [60.5, -3.2, 17.0, 17.0]])
    got = normalize_tf(export.sample_crops(tf.constant(bgr[:, :, ::-1].copy()), tf.constant(boxes, tf.float32), 24))
    for i, box in enumerate(boxes):
        np.testing.assert_allclose(got[i].numpy(), predict.make_crop(bgr, box, 24), atol=2e-3, err_msg=str(i))


@CONDITIONED
def test_export_of_a_stage_2_snapshot_serves_the_cascade(project, tmp_path, joint_input):
    from deeppose_fast import export

    ckpt2, photo, (pred, _, _) = _predict_with_stage_2(project, tmp_path, f"s2-export-{joint_input}",
                                                       joint_input=joint_input)
    out = export.export_savedmodel(ckpt2.path, tmp_path / "exported")
    marker = json.loads((out / export.MARKER).read_text())
    assert [s["stage"] for s in marker["cascade"]] == [1, 2]
    served = tf.saved_model.load(str(out))
    rgb = cv2.imread(str(photo))[:, :, ::-1].copy()
    got = served.signatures["predict_image"](image=tf.constant(rgb), box=tf.constant(pred.crop_box, tf.float32))
    got = got["joints"].numpy()
    side = LSP.torso_diameter(pred.stages[0])
    # the served cascade gives predict's final joints (its stage-1 crop resamples a little differently)
    np.testing.assert_allclose(got, pred.joints, atol=0.02 * side)
    assert np.abs(got - pred.joints).mean() < np.abs(got - pred.stages[0]).mean()
    crops = served.signatures["predict_crops"](images=tf.zeros([2, S, S, 3]))
    assert crops["joints"].shape == (2, 14, 2) and np.isfinite(crops["joints"].numpy()).all()


def test_stored_coverage_counts_the_crops_beyond_the_rule_s_regions(project):
    from deeppose_fast.datasets import precrop
    from deeppose_fast.pipeline import joint_crops
    from deeppose_fast.pipeline.contract import split_info

    table = joint_crops.RecordTable(split_info(project / "data" / "dots", "train"))
    stats = statistics.load(project / "runs" / "s1" / statistics.default_file(2))
    for ext, sigma in ((1.0, 2.0), (2.0, 0.5)):
        rule = precrop.PrecropRule(ext_max=ext)
        got = stage.stored_coverage(table, rule, stats, sigma, S, seed=4)
        # the same epoch of crops, each tested against rule.region of its person in source pixels
        gt, off = table.joints(), table.offsets()
        rows, joints = joint_crops.training_items(gt, LSP)
        draws = joint_crops.sample_training_draws(np.random.default_rng(4), gt, rows, joints, stats, LSP,
                                                  sigma=sigma, flip=False)
        out = 0
        for r, d in zip(rows, draws):
            x0, y0, x1, y1 = rule.region(gt[r] + off[r], 10 ** 9, 10 ** 9)
            cx, cy = d[:2] + off[r]
            half = d[2] / 2
            left = cx - half < x0 - 1e-3 and x0 > 0
            top = cy - half < y0 - 1e-3 and y0 > 0
            out += left or top or cx + half > x1 + 1e-3 or cy + half > y1 + 1e-3
        assert got["outside"] == pytest.approx(out / len(rows)) and got["crops"] == len(rows)
    assert stage.stored_coverage(table, precrop.PrecropRule(ext_max=1.0), stats, 3.0, S)["outside"] > 0.5


def test_a_stage_whose_crops_leave_the_stored_regions_is_refused(project, tmp_path):
    data = tmp_path / "dots"
    shutil.copytree(project / "data" / "dots", data)
    manifest = json.loads((data / shards.MANIFEST).read_text())
    manifest["precrop"] = {"enabled": True, "ext_max": EXT, "shift": 0.0}
    (data / shards.MANIFEST).write_text(json.dumps(manifest))
    stats = tmp_path / "stats.json"
    stage_stats.fit_run(project / "runs" / "s1", data, out=stats, batch_size=8, echo=lambda _: None)
    msg = _expect_refusal(project, "narrow", "reach beyond the regions prepare stored", data=str(data),
                          stats=str(stats), sigma=4.0)
    assert str(data / shards.MANIFEST) in msg and "--ext-max" in msg and "--replace" in msg


def test_eval_cli_runs_a_cascade_at_one_extension(project, monkeypatch):
    train.train(stage2_cfg(project, "s2-cli"))
    monkeypatch.chdir(project)
    r = CliRunner().invoke(main, ["eval", "runs/s2-cli", "--extensions", "1.0:2.0:0.5"])
    assert r.exit_code == 1 and "one stage-1 extension" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["eval", "runs/s2-cli", "--batch-size", "8", "--extensions", "1.5"])
    assert r.exit_code == 0, r.output
    assert "symmetric_pckh@0.2" in r.output and "eval-test-curves.png" in r.output


def test_a_stage_2_of_another_network_cannot_start_from_stage_1(project):
    msg = _expect_refusal(project, "other-net", "--no-init-previous", fc_units=16)
    assert str(checkpoint.load(project / "runs" / "s1").path) in msg


def test_the_min_extension_named_for_stage_crops_stores_them_at_full_resolution(tmp_path):
    # stage crops are smaller than person crops: regions stored for the person crop upsample them; with the
    # --min-extension stored_coverage names, 90 % of those the source holds at 1:1 or finer are stored so
    import warnings

    from deeppose_fast.datasets import DatasetWarning, precrop
    from deeppose_fast.datasets.prepare import prepare
    from deeppose_fast.pipeline import joint_crops
    from deeppose_fast.pipeline.contract import split_info
    from deeppose_fast.skeleton import MPII

    size, sigma = 67, 1.5
    stats = statistics.DisplacementStats.isotropic("mpii", 0.01)

    def prepared(name, rule):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            prepare("synthetic", tmp_path / name, num_images=24, workers=1, progress=False, rule=rule)
        table = joint_crops.RecordTable(split_info(tmp_path / name, "train"))
        return table, stage.stored_coverage(table, rule, stats, sigma, size)

    coarse = precrop.PrecropRule(resolution=size)  # person crops of 67 px
    table, before = prepared("coarse", coarse)
    assert before["upsampled"] > 0.5 and before["source_limited"] < 0.2 and 0 < before["min_extension"] < 1
    # the same epoch of crops (same seed), each side against the source's and the stored pixels
    gt = table.joints()
    rows, joints = joint_crops.training_items(gt, MPII)
    draws = joint_crops.sample_training_draws(np.random.default_rng(0), gt, rows, joints, stats, MPII,
                                              sigma=sigma, flip=False)
    stored = draws[:, 2] * table.meta[rows][:, shards.META_SCALE].min(axis=1)
    assert before["upsampled"] == pytest.approx(np.mean(stored < size))
    assert before["source_limited"] == pytest.approx(np.mean(draws[:, 2] < size))

    _, after = prepared("finer", dataclasses.replace(coarse, ext_min=before["min_extension"]))
    assert after["upsampled"] <= 0.1 * (1 - after["source_limited"]) + after["source_limited"] + 0.02
    assert after["source_limited"] == before["source_limited"]  # the same people, the same source
