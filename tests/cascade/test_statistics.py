"""deeppose_fast.cascade.statistics: the law of a stage's displacements (fit on samples of a known normal,
within tolerances computed from the sample size; a small case worked out by hand), simulated estimates
(their errors follow the law, fitted back), NaN handling, and the file (bit-exact round trip; missing,
corrupt, malformed and stale files named with the refit command)."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from deeppose_fast.cascade import statistics as st
from deeppose_fast.skeleton import LSP, MPII

SK = LSP
TORSO = sorted({j for pair in SK.torso_diagonals for j in pair})  # the four joints of the diameter
R_WRIST, L_ANKLE = SK.index("r_wrist"), SK.index("l_ankle")


def _torso_pose(sk, size, origin=(0.0, 0.0)):
    """(K, 2) pose whose torso is a ``3 size`` x ``4 size`` rectangle (both diagonals ``5 size`` long), the
    other joints spread below it."""
    x0, y0 = origin
    j = np.empty((sk.num_joints, 2))
    j[:, 0] = x0 + size * np.arange(sk.num_joints)
    j[:, 1] = y0 + 10.0 * size
    for name, (x, y) in (("l_shoulder", (0, 0)), ("r_shoulder", (3, 0)), ("r_hip", (3, 4)), ("l_hip", (0, 4))):
        j[sk.index(name)] = (x0 + x * size, y0 + y * size)
    return j


def _random_stats(rng, sk=SK, rank1=(), zero=(), source=None):
    """Per-joint laws of random means and covariances (some rank 1, some 0), for the sampling tests."""
    K = sk.num_joints
    mean = rng.uniform(-0.3, 0.3, (K, 2))
    A = rng.uniform(-0.2, 0.2, (K, 2, 2))
    cov = A @ A.transpose(0, 2, 1) + 0.002 * np.eye(2)
    for k in rank1:  # all the mass on one line
        v = rng.uniform(-0.2, 0.2, 2)
        cov[k] = np.outer(v, v)
    for k in zero:  # a point mass at the mean
        mean[k] = 0.0
        cov[k] = 0.0
    return st.DisplacementStats(mean=mean, cov=cov, count=np.full(K, 100), skeleton=sk.name, source=source or {})


def _assert_estimates(m, c, n, mean, cov, label=""):
    """Estimates ``m`` (2,) and ``c`` (2, 2) from ``n`` samples within 5 standard errors of a normal's
    ``mean``, ``cov``: se(m_i) = sqrt(cov_ii / n); se(c_ij) = sqrt((cov_ii cov_jj + cov_ij^2) / (n - 1))
    (zero for a point mass: then exact up to round-off)."""
    se_m = np.sqrt(np.diag(cov) / n)
    se_c = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / (n - 1))
    assert (np.abs(m - mean) <= 5 * se_m + 1e-12).all(), (label, m, mean, se_m)
    assert (np.abs(c - cov) <= 5 * se_c + 1e-12).all(), (label, c, cov, se_c)


def _assert_law(d, mean, cov, label=""):
    """(n, 2) samples ``d`` drawn from N(mean, cov), by their sample mean and covariance (NumPy's)."""
    _assert_estimates(d.mean(0), np.cov(d.T, ddof=1), len(d), mean, cov, label)


# --- fit ---------------------------------------------------------------------------------------------

def _hand_case():
    """Three people of torso diameters 5, 10 and 20 px (the estimate's), a fourth whose estimate has a
    degenerate torso (diameter 0, left out), and displacements on two joints in pixels:

        r_wrist:  (5, 0) / 5 = (1, 0);  (0, 20) / 10 = (0, 2);  (40, 20) / 20 = (2, 1)
        l_ankle:  (0, -5) / 5 = (0, -1);  not annotated;  (20, 60) / 20 = (1, 3)

    Every other joint of the truth is where the estimate put it.
    """
    pred = np.stack([_torso_pose(SK, s, (100.0 * i, 50.0)) for i, s in enumerate((1.0, 2.0, 4.0))]
                    + [np.full((SK.num_joints, 2), 7.0)])
    gt = pred.copy()
    gt[:3, R_WRIST] += [(5, 0), (0, 20), (40, 20)]
    gt[[0, 2], L_ANKLE] += [(0, -5), (20, 60)]
    gt[1, L_ANKLE] = np.nan
    gt[3] += 1000.0  # would dominate every statistic if the degenerate estimate were used
    return pred, gt


def test_fit_by_hand():
    pred, gt = _hand_case()
    s = st.fit(pred, gt, SK, source={"stage": 2})
    # r_wrist: mean (1, 1); deviations (0, -1), (-1, 1), (1, 0): sum of outer products [[2, -1], [-1, 2]] / 2
    np.testing.assert_allclose(s.mean[R_WRIST], [1.0, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.cov[R_WRIST], [[1.0, -0.5], [-0.5, 1.0]], rtol=0, atol=1e-12)
    # l_ankle: mean (0.5, 1); deviations (-0.5, -2), (0.5, 2): [[0.5, 2], [2, 8]] / 1
    np.testing.assert_allclose(s.mean[L_ANKLE], [0.5, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.cov[L_ANKLE], [[0.5, 2.0], [2.0, 8.0]], rtol=0, atol=1e-12)
    others = [k for k in range(SK.num_joints) if k not in (R_WRIST, L_ANKLE)]
    assert (s.mean[others] == 0).all() and (s.cov[others] == 0).all()
    expected_count = np.full(SK.num_joints, 3)
    expected_count[L_ANKLE] = 2
    assert s.count.tolist() == expected_count.tolist()
    assert s.skeleton == "lsp" and s.source == {"stage": 2}


def test_fit_divides_by_the_estimates_diameter_not_the_truths():
    pred, gt = _hand_case()
    # the truth's torso three times larger about l_shoulder: the truth's diameter changes, the estimate's not
    ls = SK.index("l_shoulder")
    for n in range(3):
        gt[n, TORSO] = gt[n, ls] + 3.0 * (gt[n, TORSO] - gt[n, ls])
    assert not np.allclose(LSP.torso_diameter(gt[:3]), LSP.torso_diameter(pred[:3]))
    s = st.fit(pred, gt, SK)
    np.testing.assert_allclose(s.mean[R_WRIST], [1.0, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.cov[R_WRIST], [[1.0, -0.5], [-0.5, 1.0]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.mean[L_ANKLE], [0.5, 1.0], rtol=0, atol=1e-12)


def test_fit_recovers_a_known_normal():
    rng = np.random.default_rng(0)
    true = _random_stats(rng, MPII, rank1=(4,))
    n = 3000
    pred = np.stack([_torso_pose(MPII, s, o) for s, o in zip(rng.uniform(5, 40, n), rng.uniform(0, 500, (n, 2)))])
    diam = MPII.torso_diameter(pred)
    L = np.linalg.cholesky(true.cov + 1e-15 * np.eye(2))  # independent of the module's 2x2 factor
    d = true.mean + np.einsum("kij,nkj->nki", L, rng.standard_normal((n, MPII.num_joints, 2)))
    gt = pred + d * diam[:, None, None]
    gt[rng.random((n, MPII.num_joints)) < 0.2] = np.nan  # a fifth of the joints not annotated
    s = st.fit(pred, gt, MPII)
    for k in range(MPII.num_joints):
        annotated = np.isfinite(gt[:, k]).all(-1)
        assert s.count[k] == annotated.sum()
        _assert_estimates(s.mean[k], s.cov[k], s.count[k], true.mean[k], true.cov[k], MPII.joint_names[k])
        # the fit is the sample law of the annotated people, exactly (NumPy's own estimators)
        np.testing.assert_allclose(s.mean[k], d[annotated, k].mean(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(s.cov[k], np.cov(d[annotated, k].T, ddof=1), rtol=1e-9, atol=1e-15)
    assert (s.cov == s.cov.transpose(0, 2, 1)).all()


def test_fit_errors():
    pred, gt = _hand_case()
    gt[2, L_ANKLE] = (np.nan, 3.0)  # half a joint is no joint: l_ankle keeps one person
    with pytest.raises(ValueError, match=r"'l_ankle' \(index 5\): 1"):
        st.fit(pred, gt, SK)
    pred, gt = _hand_case()
    bad = pred.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="pred must be finite"):
        st.fit(bad, gt, SK)
    with pytest.raises(ValueError, match=r"shape \(N, 16, 2\)"):
        st.fit(pred, gt, MPII)
    with pytest.raises(ValueError, match="same shape"):
        st.fit(pred[:3], gt, SK)
    # every estimate degenerate: every joint has no one
    with pytest.raises(ValueError, match="'r_ankle' \\(index 0\\): 0"):
        st.fit(np.zeros_like(pred), gt, SK)


# --- sample_centres ----------------------------------------------------------------------------------

def _people(rng, n, sk=SK):
    return np.stack([_torso_pose(sk, s, o) + rng.normal(0, 2, (sk.num_joints, 2))
                     for s, o in zip(rng.uniform(5, 40, n), rng.uniform(0, 500, (n, 2)))])


def test_sampled_errors_follow_the_law():
    rng = np.random.default_rng(1)
    law = _random_stats(rng, rank1=(R_WRIST,), zero=(L_ANKLE,))
    gt = _people(rng, 500)
    n_draws = 4
    centres, diam = st.sample_centres(np.random.default_rng(2), gt, law, SK, n_draws)
    assert centres.shape == (500 * n_draws, SK.num_joints, 2) and diam.shape == (500 * n_draws,)
    truth = np.repeat(gt, n_draws, axis=0)
    np.testing.assert_allclose(diam, np.repeat(SK.torso_diameter(gt), n_draws), rtol=0, atol=0)
    d = (truth - centres) / diam[:, None, None]
    for k in range(SK.num_joints):
        _assert_law(d[:, k], law.mean[k], law.cov[k], SK.joint_names[k])
    # a rank-1 law keeps its samples on its line; a point mass puts every estimate on the truth
    v = law.cov[R_WRIST, :, 0] if law.cov[R_WRIST, 0, 0] > 0 else law.cov[R_WRIST, :, 1]
    off = d[:, R_WRIST] - law.mean[R_WRIST]
    np.testing.assert_allclose(off[:, 0] * v[1] - off[:, 1] * v[0], 0, atol=1e-12)
    assert (centres[:, L_ANKLE] == truth[:, L_ANKLE]).all()


def test_sample_then_fit_recovers_the_law():
    # the torso joints keep their place (a point mass), so the estimate's diameter is the truth's and the
    # fit, which divides by the estimate's, sees the simulated law itself
    rng = np.random.default_rng(3)
    law = _random_stats(rng, MPII, rank1=(MPII.index("r_wrist"),),
                        zero=[j for pair in MPII.torso_diagonals for j in pair])
    gt = _people(rng, 800, MPII)
    centres, _ = st.sample_centres(rng, gt, law, MPII, 3)
    s = st.fit(centres, np.repeat(gt, 3, axis=0), MPII)
    assert (s.count == 2400).all()
    for k in range(MPII.num_joints):
        _assert_estimates(s.mean[k], s.cov[k], s.count[k], law.mean[k], law.cov[k], MPII.joint_names[k])


def test_sample_centres_flags_people_without_a_diameter():
    rng = np.random.default_rng(4)
    law = _random_stats(rng)
    gt = _people(rng, 3)
    gt[0, R_WRIST] = np.nan  # one joint not annotated
    with_torso = gt.copy()
    gt[1, [SK.index("l_shoulder"), SK.index("r_shoulder")]] = np.nan  # no diagonal: no diameter
    centres, diam = st.sample_centres(np.random.default_rng(5), gt, law, SK, 2)
    assert np.isnan(diam[2:4]).all() and np.isfinite(diam[[0, 1, 4, 5]]).all()
    assert np.isnan(centres[2:4]).all()
    assert np.isnan(centres[0:2, R_WRIST]).all()
    finite = np.isfinite(centres).all(-1)
    assert finite.sum() == 4 * SK.num_joints - 2
    # the other people's draws do not depend on who is annotated
    ref, _ = st.sample_centres(np.random.default_rng(5), with_torso, law, SK, 2)
    np.testing.assert_array_equal(centres[4:], ref[4:])
    np.testing.assert_array_equal(centres[0:2][finite[0:2]], ref[0:2][finite[0:2]])


def test_sample_centres_errors():
    rng = np.random.default_rng(6)
    law = _random_stats(rng)
    with pytest.raises(ValueError, match="'lsp' joints, the data has 'mpii'"):
        st.sample_centres(rng, _people(rng, 2, MPII), law, MPII, 1)
    for n in (0, 1.0, True):
        with pytest.raises(ValueError, match="n_draws"):
            st.sample_centres(rng, _people(rng, 2), law, SK, n)


# --- the stats object and its file -------------------------------------------------------------------

def test_stats_are_checked_and_frozen():
    rng = np.random.default_rng(7)
    s = _random_stats(rng, source={"step": np.int64(5)})
    assert s.source == {"step": 5} and type(s.source["step"]) is int
    with pytest.raises(ValueError):
        s.mean[0, 0] = 1.0  # read-only
    K = SK.num_joints
    fields = dict(mean=s.mean, cov=s.cov, count=s.count, skeleton="lsp")
    for change, message in ((dict(mean=np.zeros((K - 1, 2))), r"mean has shape \(13, 2\)"),
                            (dict(cov=-np.ones((K, 2, 2))), "'r_ankle'.*positive semi-definite"),
                            (dict(cov=np.tile([[1.0, 2.0], [2.0, 1.0]], (K, 1, 1))), "positive semi-definite"),
                            (dict(count=np.full(K, 1)), "count must be integers >= 2"),
                            (dict(count=np.full(K, 2.5)), "count must be integers >= 2"),
                            (dict(mean=np.full((K, 2), np.nan)), "NaN"),
                            (dict(skeleton="coco"), "unknown joint layout"),
                            (dict(skeleton=["lsp"]), "must be a joint layout's name")):
        with pytest.raises(st.StatsError, match=message):
            st.DisplacementStats(**{**fields, **change})
    with pytest.raises(st.StatsError, match="not JSON-serialisable"):
        st.DisplacementStats(**fields, source={"x": object()})


def test_save_load_round_trip_is_bit_exact(tmp_path):
    rng = np.random.default_rng(8)
    pred = _people(rng, 50)
    gt = pred + rng.normal(0, 3.7, pred.shape)
    src = {"stage": 2, "checkpoint": tmp_path / "ckpt-00001000", "step": 1000, "manifest_sha256": "ab" * 32}
    s = st.fit(pred, gt, SK, source=src)
    path = st.save(s, tmp_path / "run" / "stats.json")
    back = st.load(path, expect=src)
    assert back == s
    for name in ("mean", "cov", "count"):
        a, b = getattr(s, name), getattr(back, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert back.source["checkpoint"] == str(tmp_path / "ckpt-00001000")
    assert json.loads(path.read_text())["joint_names"] == list(SK.joint_names)
    assert os.listdir(path.parent) == ["stats.json"]  # no temporary file left


def test_save_is_atomic(tmp_path, monkeypatch):
    rng = np.random.default_rng(9)
    old, new = _random_stats(rng, source={"step": 1}), _random_stats(rng, source={"step": 2})
    path = st.save(old, tmp_path / "stats.json")
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(st.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        st.save(new, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["stats.json"]


def _load_error(path, error=st.StatsError, **kwargs) -> str:
    """The message of the ``error`` that ``st.load(path, **kwargs)`` raises, checked to be one line naming
    the file and the refit command."""
    with pytest.raises(error) as e:
        st.load(path, **kwargs)
    text = str(e.value)
    assert "\n" not in text and str(path) in text and st.REFIT_COMMAND in text
    return text


def test_load_errors_name_the_file_and_the_refit(tmp_path):
    path = tmp_path / "stats.json"
    assert "not fitted yet" in _load_error(path)

    path.write_text('{"format": "deeppose-fast-cascade-stats/1", "mean": [1, 2')
    assert "not valid JSON" in _load_error(path)

    s = _random_stats(np.random.default_rng(10))
    good = s.to_dict()
    for change, words in ((dict(mean=good["mean"][:-1]), "mean has shape (13, 2)"),
                          (dict(cov=[[1.0, 0.0]] * SK.num_joints), "cov has shape (14, 2)"),
                          (dict(format="other/1"), "format 'other/1'"),
                          (dict(skeleton="mpii"), "mean has shape (14, 2), expected (16, 2)"),
                          (dict(joint_names=list(MPII.joint_names[:14])), "joint_names"),
                          (dict(count=["two"] * SK.num_joints), "count: not an array of numbers")):
        path.write_text(json.dumps({**good, **change}))
        assert words in _load_error(path), change
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "cov"}))
    assert "missing field(s) cov" in _load_error(path)
    path.write_text("[]")
    assert "expected a JSON object" in _load_error(path)


def test_stale_statistics_are_refused(tmp_path):
    src = {"stage": 2, "checkpoint": "/runs/s1/checkpoints/ckpt-00002000", "step": 2000, "data": "/data/lsp",
           "manifest_sha256": "a" * 64}
    path = st.save(_random_stats(np.random.default_rng(11), source=src), tmp_path / "stats.json")
    assert st.load(path, expect=dict(src)).source == src
    for change, words in ((dict(step=3000), "step 2000 where 3000 was expected"),
                          (dict(manifest_sha256="b" * 64), f"manifest_sha256 '{'a' * 64}' where '{'b' * 64}'"),
                          (dict(stage=3), "stage 2 where 3 was expected"),
                          (dict(extra="x"), "extra (none) where 'x' was expected")):
        text = _load_error(path, st.StaleStatsError, expect={**src, **change})
        assert "stale" in text and words in text, text
    assert st.load(path).source == src  # no expectation: any source


def test_stage_source(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(st.StatsError, match=str(data / "manifest.json")):
        st.stage_source(stage=2, checkpoint=tmp_path / "ckpt", step=10, data=data)
    (data / "manifest.json").write_text('{"name": "lsp"}\n')
    src = st.stage_source(stage=2, checkpoint=tmp_path / "ckpt", step=10, data=data)
    assert src == {"stage": 2, "checkpoint": str((tmp_path / "ckpt").resolve()), "step": 10,
                   "data": str(data.resolve()),
                   "manifest_sha256": hashlib.sha256(b'{"name": "lsp"}\n').hexdigest()}
    (data / "manifest.json").write_text('{"name": "lsp", "seed": 2}\n')  # the data set rebuilt
    assert st.stage_source(stage=2, checkpoint=tmp_path / "ckpt", step=10, data=data) != src
    with pytest.raises(ValueError, match="stage must be an integer >= 2"):
        st.stage_source(stage=1, checkpoint=tmp_path, step=0, data=data)
