"""evaluate(): hand-computed tables for every protocol, an independent loop reference on random data,
the text table and JSON, and the input errors users will hit."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from deeppose_fast import skeleton
from deeppose_fast.metrics import CURVE_THRESHOLDS, evaluate, joint_errors, normaliser, pck, pck_curve, pcp

BACKENDS = ("numba", "numpy")

# A standing person in pixels, by joint name. Head stick 10 px (the dtf PCKh normaliser); arms and legs
# 20 / 30 px; LSP torso mid-shoulders (50, 10) to mid-hips (50, 50): 40 px; |L shoulder - R hip| =
# |(60, 10) - (30, 50)| = 50 px (the official LSP PCK normaliser). MPII: thorax (50, 14) to pelvis (50, 50).
POSE = {"head_top": (50, 0), "neck": (50, 10), "upper_neck": (50, 10),
        "r_shoulder": (40, 10), "l_shoulder": (60, 10), "r_elbow": (40, 30), "l_elbow": (60, 30),
        "r_wrist": (40, 50), "l_wrist": (60, 50), "r_hip": (30, 50), "l_hip": (70, 50),
        "r_knee": (30, 80), "l_knee": (70, 80), "r_ankle": (30, 110), "l_ankle": (70, 110),
        "thorax": (50, 14), "pelvis": (50, 50)}
HEAD_BOX = (35.0, -10.0, 65.0, 30.0)  # 30 x 40: diagonal 50, official MPII normaliser 0.6 x 50 = 30


def person(ds: str, n: int = 1) -> np.ndarray:
    sk = skeleton.get(ds)
    return np.tile(np.array([POSE[name] for name in sk.joint_names], np.float64), (n, 1, 1))


def move(arr, i, ds, name, dx=0.0, dy=0.0):
    arr[i, skeleton.get(ds).index(name)] += (dx, dy)


def setj(arr, i, ds, name, value):
    arr[i, skeleton.get(ds).index(name)] = value


# ---- hand-computed ----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_lsp_dtf_hand_computed(backend):
    gt = person("lsp")
    pred = gt.copy()
    move(pred, 0, "lsp", "r_wrist", dy=5)             # 5 / 10 = 0.5: PCKh correct (inclusive)
    move(pred, 0, "lsp", "l_wrist", dy=5 + 1e-9)      # just over: PCKh wrong; PCP limit 10: fine
    move(pred, 0, "lsp", "r_elbow", dx=12)            # PCKh wrong; R upper + lower arm strict wrong
    setj(pred, 0, "lsp", "l_ankle", np.nan)           # a miss: PCKh wrong, L lower leg wrong
    setj(gt, 0, "lsp", "r_knee", np.nan)              # unannotated: excluded, and R upper/lower leg
    res = evaluate(pred, gt, "lsp", "dtf", backend=backend)

    pckh = res.tables["PCKh"]
    assert math.isnan(pckh.scores["r_knee"]) and pckh.counts["r_knee"] == 0
    assert pckh.scores["r_wrist"] == 1 and pckh.scores["l_wrist"] == 0 and pckh.scores["r_elbow"] == 0
    assert pckh.scores["l_ankle"] == 0 and pckh.scores["head_top"] == 1
    assert list(pckh.scores)[:3] == ["head_top", "neck", "r_shoulder"]  # the reference's report order
    assert pckh.total == pytest.approx(10 / 13)                        # mean over the 13 evaluated joints
    sym = res.tables["Symmetric PCKh"]
    assert sym.scores == pytest.approx({"Head": 1, "Neck": 1, "Shoulder": 1, "Elbow": 0.5, "Wrist": 0.5,
                                        "Hip": 1, "Knee": 1, "Ankle": 0.5})
    assert sym.total == pytest.approx(6.5 / 8)

    # strict PCP: U Arm = mean(R 0, L 1); L Arm = mean(R 0, L 1); U Leg = L only; L Leg = L only (a miss)
    assert res.metric == "PCP@0.5"
    assert res.parts == pytest.approx({"Head": 1, "Torso": 1, "U Arm": 0.5, "L Arm": 0.5, "U Leg": 1,
                                       "L Leg": 0})
    assert res.total == pytest.approx(4 / 6)
    assert res.counts == {"Head": 1, "Torso": 1, "U Arm": 2, "L Arm": 2, "U Leg": 1, "L Leg": 1}
    # relaxed: R upper arm (0 + 12) / 2 = 6 <= 10 and R lower arm (12 + 5) / 2 = 8.5 <= 10 are correct
    relaxed = res.tables["Relaxed PCP"]
    assert relaxed.scores == pytest.approx({"Head": 1, "Torso": 1, "U Arm": 1, "L Arm": 1, "U Leg": 1,
                                            "L Leg": 0})
    assert relaxed.total == pytest.approx(5 / 6)
    assert res.excluded == 0 and res.num_people == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_lsp_torso_uses_midpoints_and_boundary(backend):
    gt = person("lsp", 3)
    pred = gt.copy()
    # person 0: shoulders move apart by 30 px each: midpoint unchanged, torso correct
    move(pred, 0, "lsp", "r_shoulder", dx=-30)
    move(pred, 0, "lsp", "l_shoulder", dx=30)
    # person 1: both shoulders down 20 = 0.5 x 40: correct (inclusive); person 2: 21: wrong
    for i, d in ((1, 20), (2, 21)):
        move(pred, i, "lsp", "r_shoulder", dy=d)
        move(pred, i, "lsp", "l_shoulder", dy=d)
    res = evaluate(pred, gt, "lsp", "dtf", backend=backend)
    assert res.parts["Torso"] == pytest.approx(2 / 3)
    assert res.counts["Torso"] == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_length_head_and_excluded_normaliser(backend):
    gt = person("lsp", 3)
    setj(gt, 0, "lsp", "head_top", POSE["neck"])       # person 0: head stick of length 0, PCKh norm 0
    setj(gt, 1, "lsp", "head_top", POSE["neck"])       # person 1: same, prediction 1e-6 off
    pred = gt.copy()
    move(pred, 1, "lsp", "head_top", dx=1e-6)
    move(pred, 2, "lsp", "r_ankle", dx=6)              # person 2: the only PCKh-evaluated person
    res = evaluate(pred, gt, "lsp", "dtf", backend=backend)
    assert res.excluded == 2
    assert res.parts["Head"] == pytest.approx(2 / 3)   # zero length: correct only with zero error
    pckh = res.tables["PCKh"]
    assert set(pckh.counts.values()) == {1}            # person 2 only
    assert pckh.scores["r_ankle"] == 0 and pckh.total == pytest.approx(13 / 14)
    assert res.to_dict()["excluded"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_mpii_official_hand_computed(backend):
    ds = "mpii"
    gt = person(ds, 2)
    box = np.tile(np.array(HEAD_BOX), (2, 1))
    pred = gt.copy()
    move(pred, 0, ds, "r_wrist", dx=15)               # 15 / 30 = 0.5: correct
    move(pred, 0, ds, "l_wrist", dx=15.5)             # wrong
    move(pred, 0, ds, "pelvis", dx=100)               # pelvis and thorax are not counted
    setj(pred, 0, ds, "thorax", np.nan)
    setj(gt, 1, ds, "head_top", np.nan)               # unannotated
    move(pred, 1, ds, "upper_neck", dy=16)            # wrong
    setj(gt, 1, ds, "r_ankle", np.nan)
    res = evaluate(pred, gt, ds, "official", head_box=box, backend=backend)
    # Head = mean(head top 1/1, upper neck 1/2); Wrist = mean(R 2/2, L 1/2)
    assert res.metric == "PCKh@0.5"
    assert res.parts == pytest.approx({"Head": 0.75, "Shoulder": 1, "Elbow": 1, "Wrist": 0.75, "Hip": 1,
                                       "Knee": 1, "Ankle": 1})
    assert res.counts["Head"] == 3 and res.counts["Ankle"] == 3
    # pooled over 14 joints: person 0 13/14, person 1 11/12 -> 24/26 (the mean of groups would be 6.5/7)
    assert res.total == pytest.approx(24 / 26)
    assert list(res.tables) == ["PCKh"]
    # dtf on the same data: head top to neck normaliser (10 px) changes the numbers
    dtf = evaluate(pred, gt, ds, "dtf", backend=backend)
    assert dtf.metric == "Symmetric PCKh@0.5"
    assert dtf.excluded == 1                          # person 1 has no head top: person 0 only
    assert dtf.parts["Wrist"] == 0                    # 15 / 10 and 15.5 / 10 both wrong
    assert dtf.counts["Wrist"] == 2 and dtf.parts["Shoulder"] == 1
    assert dtf.parts["Pelvis"] == pytest.approx(0.0) and dtf.counts["Pelvis"] == 1
    # a head box missing for one person excludes that person only
    box[1] = np.nan
    res2 = evaluate(pred, gt, ds, "official", head_box=box, backend=backend)
    assert res2.excluded == 1 and res2.total == pytest.approx(13 / 14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lsp_official_hand_computed(backend):
    ds = "lsp"
    gt = person(ds, 2)
    pred = gt.copy()
    move(pred, 0, ds, "r_wrist", dy=10)               # PCK: 10 / 50 = 0.2 correct; PCP 10 <= 0.5 x 20
    move(pred, 0, ds, "l_wrist", dy=10.5)             # PCK wrong; PCP: 10.5 > 10: L lower arm wrong
    setj(gt, 1, ds, "l_ankle", np.nan)                # person 1: L lower leg excluded
    move(pred, 1, ds, "l_knee", dx=20)                # L upper leg wrong (20 > 15)
    res = evaluate(pred, gt, ds, "official", backend=backend)
    assert res.metric == "PCP@0.5" and res.pck_threshold == 0.2
    assert res.parts == pytest.approx({"Head": 1, "Torso": 1, "U Arm": 1, "L Arm": 0.75, "U Leg": 0.75,
                                       "L Leg": 1})
    # pooled over all 20 evaluated sticks minus one excluded: 17 correct of 19
    assert res.total == pytest.approx(17 / 19)
    pckt = res.tables["PCK"]
    assert pckt.threshold == 0.2
    # Wrist: mean(R 2/2, L 1/2); Knee: mean(R 2/2, L 1/2); pooled: 28 - 1 (unannotated) = 27, 2 wrong
    assert pckt.scores["Wrist"] == pytest.approx(0.75) and pckt.scores["Knee"] == pytest.approx(0.75)
    assert pckt.total == pytest.approx(25 / 27)
    assert res.curve.name == "PCK" and res.curve.value_at(0.2) == pytest.approx(25 / 27)


@pytest.mark.parametrize("backend", BACKENDS)
def test_visible_restricts_and_defaults_to_all_annotated(backend):
    gt = person("lsp")
    pred = gt.copy()
    move(pred, 0, "lsp", "r_elbow", dx=50)
    vis = np.ones((1, 14), bool)
    vis[0, skeleton.LSP.index("r_elbow")] = False
    full = evaluate(pred, gt, "lsp", "dtf", backend=backend)
    masked = evaluate(pred, gt, "lsp", "dtf", visible=vis, backend=backend)
    assert full.tables["PCKh"].scores["r_elbow"] == 0 and full.parts["U Arm"] == 0.5
    assert math.isnan(masked.tables["PCKh"].scores["r_elbow"])
    assert masked.parts["U Arm"] == 1 and masked.counts["U Arm"] == 1  # R upper arm excluded


@pytest.mark.parametrize("backend", BACKENDS)
def test_curve_perfect_and_all_missed(backend):
    gt = person("mpii", 4)
    box = np.tile(np.array(HEAD_BOX), (4, 1))
    perfect = evaluate(gt.copy(), gt, "mpii", "official", head_box=box, backend=backend)
    assert perfect.curve.values == [1.0] * 51 and perfect.curve.auc == 1.0
    missed = evaluate(np.full_like(gt, np.nan), gt, "mpii", "official", head_box=box, backend=backend)
    assert missed.total == 0 and missed.curve.auc == 0.0
    # errors exactly 0.25 of the normaliser: the curve steps from 0 to 1 at 0.25, AUC = 0.5
    half = gt.copy()
    half[..., 0] += 7.5
    res = evaluate(half, gt, "mpii", "official", head_box=box, backend=backend)
    assert res.curve.value_at(0.24) == 0 and res.curve.value_at(0.25) == 1
    assert res.curve.auc == pytest.approx((0.5 - 0.25 + 0.5 * 0.01) / 0.5)


def test_curve_value_at_matches_pckh_at_that_threshold():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 200, (50, 16, 2))
    pred = gt + rng.normal(0, 8, gt.shape)
    box = np.concatenate([gt[:, 9] - 20, gt[:, 9] + 20], axis=1)
    res = evaluate(pred, gt, "mpii", "official", head_box=box)
    at = evaluate(pred, gt, "mpii", "official", head_box=box, threshold=0.1)
    assert res.curve.value_at(0.1) == pytest.approx(at.total)
    with pytest.raises(ValueError, match="not on the curve's grid"):
        res.curve.value_at(0.105)


# ---- independent loop reference on random data -------------------------------------------------------

def ref_sticks(ds):
    j = skeleton.get(ds).index
    neck = "neck" if ds == "lsp" else "upper_neck"
    torso = (([j("r_shoulder"), j("l_shoulder")], [j("r_hip"), j("l_hip")]) if ds == "lsp"
             else ([j("thorax")], [j("pelvis")]))
    limbs = {f"{s} {seg}": ([j(f"{s.lower()}_{a}")], [j(f"{s.lower()}_{b}")])
             for s in ("R", "L") for seg, a, b in (("upper arm", "shoulder", "elbow"),
                                                   ("lower arm", "elbow", "wrist"),
                                                   ("upper leg", "hip", "knee"),
                                                   ("lower leg", "knee", "ankle"))}
    return {"head": ([j("head_top")], [j(neck)]), "torso": torso, **limbs}


REF_PARTS = {"Head": ["head"], "Torso": ["torso"], "U Arm": ["R upper arm", "L upper arm"],
             "L Arm": ["R lower arm", "L lower arm"], "U Leg": ["R upper leg", "L upper leg"],
             "L Leg": ["R lower leg", "L lower leg"]}


def ref_groups(ds, official):
    j = skeleton.get(ds).index
    neck = "neck" if ds == "lsp" else "upper_neck"
    limbs = {g: [j("r_" + g.lower()), j("l_" + g.lower())]
             for g in ("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")}
    if official:
        return {"Head": [j("head_top"), j(neck)], **limbs}
    groups = {"Head": [j("head_top")], "Neck": [j(neck)], **limbs}
    if ds == "mpii":
        groups.update(Thorax=[j("thorax")], Pelvis=[j("pelvis")])
    return groups


def mean(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def ref_evaluate(pred, gt, ds, protocol, head_box, visible, thr):
    """Plain loops over people, joints and sticks, following REFERENCE.md's wording."""
    sk = skeleton.get(ds)
    j = sk.index
    official = protocol == "official"
    n, k = gt.shape[:2]
    pck_thr = 0.2 if (official and ds == "lsp") else thr

    def ok(i, jj):
        return not np.isnan(gt[i, jj]).any() and (visible is None or visible[i, jj])

    def pt(arr, i, idx):
        return (sum(float(arr[i, q, 0]) for q in idx) / len(idx),
                sum(float(arr[i, q, 1]) for q in idx) / len(idx))

    def dist(a, b):
        d = math.hypot(a[0] - b[0], a[1] - b[1])
        return math.inf if math.isnan(d) else d

    correct, total = [0] * k, [0] * k
    curve_c = np.zeros((k, 51))
    excluded = 0
    for i in range(n):
        if official and ds == "mpii":
            x1, y1, x2, y2 = head_box[i]
            h = 0.6 * math.hypot(x2 - x1, y2 - y1)
        elif official:
            h = dist(gt[i, j("l_shoulder")], gt[i, j("r_hip")])
        else:
            h = dist(gt[i, sk.head_top], gt[i, sk.neck])
        if math.isnan(h) or math.isinf(h) or h <= 0:
            excluded += 1
            continue
        for jj in range(k):
            if ok(i, jj):
                e = dist(pred[i, jj], gt[i, jj]) / h
                total[jj] += 1
                correct[jj] += e <= pck_thr
                curve_c[jj] += [e <= t for t in CURVE_THRESHOLDS]
    per_joint = [c / t if t else math.nan for c, t in zip(correct, total)]
    out = {"excluded": excluded}
    groups = ref_groups(ds, official)
    group_scores = {g: mean([per_joint[q] for q in m]) for g, m in groups.items()}
    if official:
        js = sorted(q for m in groups.values() for q in m)
        pooled = sum(correct[q] for q in js) / sum(total[q] for q in js)
        out["PCKh" if ds == "mpii" else "PCK"] = (group_scores, pooled)
        curve = [curve_c[js, c].sum() / sum(total[q] for q in js) for c in range(51)]
    else:
        out["PCKh"] = ({sk.joint_names[q]: per_joint[q] for q in range(k)}, mean(per_joint))
        out["Symmetric PCKh"] = (group_scores, mean(group_scores.values()))
        curve = [mean([curve_c[q, c] / total[q] if total[q] else math.nan for q in range(k)])
                 for c in range(51)]
    out["curve"] = curve
    out["auc"] = sum((curve[c] + curve[c + 1]) / 2 * 0.01 for c in range(50)) / 0.5

    if not (official and ds == "mpii"):
        sticks = ref_sticks(ds)
        strict, relaxed, cnt = {}, {}, {}
        for name, (a, b) in sticks.items():
            s = r = c = 0
            for i in range(n):
                if not all(ok(i, q) for q in a + b):
                    continue
                ga, gb = pt(gt, i, a), pt(gt, i, b)
                ea, eb = dist(pt(pred, i, a), ga), dist(pt(pred, i, b), gb)
                length = dist(ga, gb)
                c += 1
                s += max(ea, eb) <= thr * length
                r += (ea + eb) / 2 <= thr * length
            strict[name] = s / c if c else math.nan
            relaxed[name] = r / c if c else math.nan
            cnt[name] = (s, r, c)
        for label, scores in (("PCP", strict), ("Relaxed PCP", relaxed)):
            parts = {p: mean([scores[s] for s in m]) for p, m in REF_PARTS.items()}
            if official:
                if label == "PCP":
                    out[label] = (parts, sum(v[0] for v in cnt.values()) / sum(v[2] for v in cnt.values()))
            else:
                out[label] = (parts, mean(parts.values()))
    return out


def random_data(rng, n, ds, dtype):
    k = skeleton.get(ds).num_joints
    gt = rng.uniform(0, 400, (n, k, 2))
    pred = gt + rng.normal(0, rng.uniform(3, 30), (n, k, 2))
    gt[rng.random((n, k)) < 0.08] = np.nan
    pred[rng.random((n, k)) < 0.05] = np.nan
    centre = np.nan_to_num(gt[:, skeleton.get(ds).head_top], nan=100.0)
    half = rng.uniform(5, 40, (n, 1))
    box = np.concatenate([centre - half, centre + half], axis=1)
    box[rng.random(n) < 0.05] = np.nan
    visible = (rng.random((n, k)) < 0.85) if rng.random() < 0.5 else None
    return pred.astype(dtype), gt.astype(dtype), box, visible


def close(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("ds", ["lsp", "mpii"])
@pytest.mark.parametrize("protocol", ["dtf", "official"])
@pytest.mark.parametrize("n,seed,dtype", [(1, 0, np.float64), (3, 1, np.float32), (17, 2, np.float64),
                                          (120, 3, np.float32), (400, 4, np.float64)])
def test_random_agreement_with_loop_reference(ds, protocol, n, seed, dtype):
    rng = np.random.default_rng(seed + 1000 * (ds == "mpii") + 100 * (protocol == "dtf"))
    pred, gt, box, visible = random_data(rng, n, ds, dtype)
    if n == 1:  # a single person must have a usable normaliser for evaluate() to succeed
        gt = np.nan_to_num(gt, nan=7.0)
        box = np.nan_to_num(box, nan=1.0) + np.array([0, 0, 30, 30])
    thr = float(rng.choice([0.5, 0.3, 0.75]))
    ref = ref_evaluate(pred.astype(np.float64), gt.astype(np.float64), ds, protocol, box, visible, thr)
    for backend in BACKENDS:
        res = evaluate(pred, gt, ds, protocol, head_box=box, visible=visible, threshold=thr, backend=backend)
        assert res.excluded == ref["excluded"]
        for name, table in res.tables.items():
            want_scores, want_total = ref[name]
            assert list(table.scores) == list(want_scores) or name == "PCKh"
            for part, want in want_scores.items():
                assert close(table.scores[part], want), (backend, name, part)
            assert close(table.total, want_total), (backend, name)
        assert set(res.tables) == set(ref) - {"excluded", "curve", "auc"}
        for got, want in zip(res.curve.values, ref["curve"]):
            assert close(got, want)
        assert close(res.curve.auc, ref["auc"])


# ---- output formats ---------------------------------------------------------------------------------

def test_table_text_and_json():
    gt = person("lsp", 2)
    pred = gt.copy()
    move(pred, 1, "lsp", "l_wrist", dx=11)
    res = evaluate(pred, gt, "lsp", "dtf")
    text = res.table()
    lines = text.splitlines()
    assert "protocol dtf" in lines[0] and "threshold 0.5" in lines[0] and "LSP" in lines[0]
    i = lines.index(next(line for line in lines if line.startswith("PCP@0.5")))
    assert lines[i + 1].split() == ["Head", "Torso", "U", "Arm", "L", "Arm", "U", "Leg", "L", "Leg", "mPCP"]
    assert lines[i + 2].split() == ["1.000", "1.000", "1.000", "0.750", "1.000", "1.000", "0.958"]
    assert any(line.startswith("Symmetric PCKh@0.5") for line in lines)
    assert "AUC" in lines[-1]
    official = evaluate(pred, gt, "lsp", "official").table()
    assert "protocol official" in official.splitlines()[0] and "PCK 0.2" in official.splitlines()[0]
    assert "PCK@0.2" in official
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["protocol"] == "dtf" and d["metric"] == "PCP@0.5" and d["total"] == pytest.approx(res.total)
    assert d["tables"]["PCKh"]["counts"]["head_top"] == 2 and len(d["curve"]["values"]) == 51
    # NaN scores (a joint never annotated) become null in JSON
    gt2 = gt.copy()
    setj(gt2, 0, "lsp", "r_knee", np.nan)
    setj(gt2, 1, "lsp", "r_knee", np.nan)
    d2 = json.loads(json.dumps(evaluate(pred, gt2, "lsp", "dtf").to_dict(), allow_nan=False))
    assert d2["tables"]["PCKh"]["scores"]["r_knee"] is None


# ---- single-metric functions -------------------------------------------------------------------------

def test_single_metric_functions_agree_with_evaluate():
    rng = np.random.default_rng(11)
    pred, gt, _, _ = random_data(rng, 60, "lsp", np.float64)
    h = normaliser(gt, "lsp", "dtf")
    i = 5
    assert np.isnan(h[i]) or h[i] == pytest.approx(math.dist(gt[i, 13], gt[i, 12]))
    scores, counts = pck(pred, gt, h, 0.5)
    res = evaluate(pred, gt, "lsp", "dtf")
    for jj, name in enumerate(skeleton.LSP.joint_names):
        assert close(scores[jj], res.tables["PCKh"].scores[name])
        assert counts[jj] == res.tables["PCKh"].counts[name]
    strict, n_sticks = pcp(pred, gt, "lsp", 0.5)
    relaxed, _ = pcp(pred, gt, "lsp", 0.5, relaxed=True)
    assert close(strict[0], res.parts["Head"])                                # stick 0 is the head
    assert close(relaxed[1], res.tables["Relaxed PCP"].scores["Torso"])       # stick 1 the torso
    assert n_sticks[0] == res.counts["Head"]
    err = joint_errors(pred, gt, h)
    usable = ~np.isnan(err)
    assert usable.sum() == counts.sum()
    curve = pck_curve(pred, gt, h)
    assert curve.value_at(0.5) == pytest.approx((err[usable] <= 0.5).sum() / usable.sum())
    box = np.array([[0, 0, 3, 4]] * 60, np.float64)
    np.testing.assert_allclose(normaliser(np.zeros((60, 16, 2)), "mpii", "official", head_box=box), 3.0)


# ---- errors -------------------------------------------------------------------------------------------

def test_errors_users_will_hit():
    mpii = person("mpii", 2)
    with pytest.raises(ValueError, match="LSP layout has 14 joints but the arrays have K = 16"):
        evaluate(mpii, mpii, "lsp")
    with pytest.raises(ValueError, match="official MPII protocol needs head_box"):
        evaluate(mpii, mpii, "mpii", "official")
    with pytest.raises(ValueError, match="head_box is all NaN"):
        evaluate(mpii, mpii, "mpii", "official", head_box=np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="gt is all NaN"):
        evaluate(mpii, np.full_like(mpii, np.nan), "mpii")
    with pytest.raises(ValueError, match="unknown backend"):
        evaluate(mpii, mpii, "mpii", backend="cuda")
    with pytest.raises(ValueError, match="unknown dataset"):
        evaluate(mpii, mpii, "MPII")
    no_head = mpii.copy()
    no_head[:, skeleton.MPII.head_top] = np.nan
    with pytest.raises(ValueError, match="no person has a usable PCKh normaliser.*head_top - upper_neck"):
        evaluate(mpii, no_head, "mpii", "dtf")
    with pytest.raises(ValueError, match=r"norm must have shape \(N,\)"):
        pck(mpii, mpii, np.ones(3))
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        evaluate(mpii, mpii, "mpii", threshold=-1)


def test_threshold_overrides():
    gt = person("lsp", 1)
    pred = gt.copy()
    move(pred, 0, "lsp", "r_wrist", dx=4)                 # 4 / 10 = 0.4 of the head; 4 / 50 of shoulder-hip
    res = evaluate(pred, gt, "lsp", "dtf", threshold=0.3)
    assert res.tables["PCKh"].threshold == 0.3 and res.tables["PCKh"].scores["r_wrist"] == 0
    assert res.tables["PCP"].threshold == 0.3
    res = evaluate(pred, gt, "lsp", "dtf", threshold=0.3, pck_threshold=0.4)
    assert res.tables["PCKh"].scores["r_wrist"] == 1 and "PCK 0.4" in res.table().splitlines()[0]
    official = evaluate(pred, gt, "lsp", "official", pck_threshold=0.05)
    assert official.tables["PCK"].threshold == 0.05 and official.tables["PCK"].scores["Wrist"] == 0.5
    custom = evaluate(pred, gt, "lsp", "dtf", curve_thresholds=[0.0, 0.4, 1.0])
    assert custom.curve.thresholds == [0.0, 0.4, 1.0]
    assert custom.curve.values == pytest.approx([13 / 14, 1.0, 1.0])
    # trapezoid: ((13/14 + 1) / 2 * 0.4 + 1 * 0.6) / 1.0
    assert custom.curve.auc == pytest.approx((13 / 14 + 1) / 2 * 0.4 + 0.6)
