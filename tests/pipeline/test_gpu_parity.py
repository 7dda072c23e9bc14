"""Backend parity (``deeppose_fast.pipeline.parity``, which ``deeppose-fast doctor`` runs too).

- ``gpu``-marked: every check, the CPU against the GPU (skipped without a GPU, with the reason).
- On every host: every check with the CPU on both sides (the comparison code runs; every difference is 0),
  and the tolerance arithmetic on hand-computed cases, each at its bound: just inside passes, just
  outside fails, so a wrong bound fails here without a GPU.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from deeppose_fast.pipeline import contract, parity


@pytest.fixture(scope="module")
def dot_dir(tmp_path_factory):
    return parity.make_dot_data(tmp_path_factory.mktemp("dots"))


@pytest.mark.gpu
@pytest.mark.parametrize("check", parity.CHECKS, ids=lambda c: c.__name__)
def test_gpu_matches_cpu(dot_dir, check):
    result = check(dot_dir, "gpu")
    assert result.figures and result.passed, result.summary()


def test_the_checks_run_and_pass_cpu_against_cpu(dot_dir):
    for check in parity.CHECKS:
        result = check(dot_dir, "cpu")
        assert result.figures and result.passed, (check.__name__, result.summary())
        # the same backend on both sides: every difference between the sides is 0 (not so a backend against
        # the float64 reference, nor float16 against float32)
        sides = [f for f in result.figures if "|diff|" in f.name and "float32 bound" not in f.name]
        assert sides and all(f.value == 0 for f in sides), (check.__name__, result.summary())


def result(name="demo") -> parity.ParityResult:
    return parity.ParityResult(name)


# 1. JPEG decode ------------------------------------------------------------------------------------
def test_jpeg_max_bound_by_hand():
    # B = Y + 1.772 Cb: IDCT 2 x 1 on Y, (2 x 1 + 1 upsampling) on Cb, + 1 rounding = 8.316 -> 8
    assert parity.JPEG_MAX_GREY == 8 == math.floor(2 + 1.772 * 3 + 1)
    # R alone: 2 + 1.402 x 3 + 1 = 7.206; with exact decoders only the final rounding is left
    assert parity.jpeg_max_grey(idct=1, upsample=1, rounding=1) == 8
    assert parity.jpeg_max_grey(idct=0, upsample=0, rounding=1) == 1
    assert parity.jpeg_max_grey(idct=0, upsample=1, rounding=0) == 1  # B: 1.772 x 1 -> 1
    assert parity.JPEG_MEAN_GREY == 1.0  # DALI's test_fancy_upsampling: eps = 1


def test_raw_pixels_at_the_crop_bound():
    # decoder 8 + warp 2 x 255 x 2^-10 + 8 x 255 x 2^-24
    assert parity.WARP_MAX_GREY == pytest.approx(0.498046875 + 0.000121593, abs=1e-9)
    assert parity.CROP_MAX_GREY == pytest.approx(8.498168, abs=1e-6)
    cpu = np.full((2, 4, 4, 3), 100.0)
    inside, outside = cpu.copy(), cpu.copy()
    inside[1, 2, 3, 0] += 8.49
    outside[1, 2, 3, 0] -= 8.51
    r = result()
    parity.pixel_figures(r, "pixels", cpu, inside)
    assert r.passed, r.summary()
    r = result()
    parity.pixel_figures(r, "pixels", cpu, outside)
    assert [f.name for f in r.failures] == ["pixels max |diff| grey"]
    r = result()
    parity.pixel_figures(r, "pixels", cpu, cpu[:, :3])
    assert {f.name for f in r.failures} == {"pixels shape", "pixels max |diff| grey"}


# 4. normalisation ------------------------------------------------------------------------------------
def raw_two_levels() -> np.ndarray:
    """(1, 2, 2, 1): 0, 0, 10, 10: mean 5, var 25, s = sqrt(26), z = -+5 / sqrt(26)."""
    return np.array([0.0, 0.0, 10.0, 10.0]).reshape(1, 2, 2, 1)


def test_image_stats_by_hand():
    st = parity.image_stats(raw_two_levels())
    assert st["n"] == 4 and st["M"].ravel().tolist() == [10.0]
    assert st["s"].ravel().tolist() == pytest.approx([math.sqrt(26)])
    assert st["z"].ravel().tolist() == pytest.approx([-5 / math.sqrt(26)] * 2 + [5 / math.sqrt(26)] * 2)


def test_normalised_bound_by_hand():
    """b = 1 grey: b (2 + |z|) / max(1, s - b) = 2.98058 / 4.09902 = 0.72715, plus float32 terms < 1e-5."""
    st = parity.image_stats(raw_two_levels())
    z = 5 / math.sqrt(26)
    want = (2 + z) / (math.sqrt(26) - 1)
    bound = parity.normalised_bound(st["z"], st["s"], st["M"], st["n"], grey=1.0)
    assert want == pytest.approx(0.72715, abs=1e-5)
    assert bound.ravel() == pytest.approx([want] * 4, abs=1e-5) and (bound.ravel() > want).all()
    # s below 1 + b: the floor of s at 1 (epsilon = 1) keeps the bound finite: b = 5 -> 5 (2 + z) / 1
    assert parity.normalised_bound(st["z"], st["s"], st["M"], st["n"], grey=5.0).ravel()[0] == \
        pytest.approx(5 * (2 + z), rel=1e-5)
    zc = st["z"]
    for delta, ok in ((0.72, True), (0.73, False)):
        r = result()
        zo = zc.copy()
        zo[0, 1, 0, 0] += delta
        parity.normalised_figures(r, "normalised", raw_two_levels(), zc, zo, grey=1.0)
        assert r.passed is ok, (delta, r.summary())


def test_normalised_bound_holds_for_any_raw_difference_within_b():
    """The derivation: perturb raw crops by anything within b grey (+-b noise, a constant shift, one
    side's contrast raised, -b everywhere but +b on one pixel) and the exact normalised difference stays
    within the bound; the last case, at a pixel with z near 0, comes close to it."""
    rng = np.random.default_rng(4)
    b = parity.CROP_MAX_GREY
    worst = 0.0
    for trial in range(80):
        raw = (rng.uniform(0, 255, (2, 24, 24, 3)) * rng.uniform(0.05, 1.0) + rng.uniform(0, 100)).clip(0, 255)
        centred = raw - raw.mean(axis=(1, 2), keepdims=True)
        if trial % 4 == 3:
            d = np.full(raw.shape, -b)
            flat = np.abs(centred).reshape(2, -1, 3).argmin(axis=1)  # per image and channel, z nearest 0
            for i in range(2):
                for c in range(3):
                    d[i, flat[i, c] // 24, flat[i, c] % 24, c] = b
        else:
            d = {0: rng.choice([-b, b], raw.shape), 1: np.full(raw.shape, b), 2: b * np.sign(centred)}[trial % 4]
            d = d * rng.uniform(0.5, 1.0)
        st, so = parity.image_stats(raw), parity.image_stats(raw + d)
        ratio = parity.max_ratio(st["z"], so["z"], parity.normalised_bound(st["z"], st["s"], st["M"], st["n"], b))
        assert ratio <= 1.0, trial
        worst = max(worst, ratio)
    assert worst > 0.8  # the bound is nearly reached: it is not loose


def test_float32_normalisation_bound_by_hand():
    """n = 9216 (96 x 96): g = 6 x 96 x 2^-24; M = 255, s = 30, z = 2."""
    g = 6 * 96 * 2.0 ** -24
    assert parity.rounding_gamma(96 * 96) == pytest.approx(g)
    dm = (g + 2.0 ** -24) * 255
    want = dm / 30 + 2 * ((g + 4 * 2.0 ** -24) / 2 + dm * dm / 900) + 4 * 2.0 ** -24 * 2 + 2 * 2.0 ** -24 * 255 / 30
    assert parity.norm_float32_bound(2.0, 30.0, 255.0, 96 * 96) == pytest.approx(want, rel=1e-12)
    assert 2.9e-4 < want < 3.4e-4


def test_the_float32_bound_catches_a_wrong_epsilon_but_not_float32_rounding():
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 255, (3, 96, 96, 3)).astype(np.float32)
    st = parity.image_stats(raw)
    rounded = st["z"].astype(np.float32)  # what a perfect float32 normalisation returns
    r = result()
    parity.reference_figures(r, "rounded", raw, rounded)
    assert r.passed, r.summary()
    x = raw.astype(np.float64)
    no_eps = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    r = result()
    parity.reference_figures(r, "no epsilon", raw, no_eps)
    assert not r.passed, r.summary()
    assert contract.NORM_EPSILON == 1.0  # the bound's floor s >= 1 relies on it


# 5. float16 ----------------------------------------------------------------------------------------
def test_float16_bound_by_hand():
    """1000 has float16 spacing 0.5: float16(1000.2) = 1000 is 0.2 off (bound 2^-11 x 1000.2 = 0.48838);
    1000.5 for 1000 is 0.5 off (bound 0.48828): fails; a float32 spread between two runs widens it."""
    x32 = np.array([1000.2, 1000.0], np.float32)
    f16 = x32.astype(np.float16)
    assert f16.tolist() == [1000.0, 1000.0]
    r = result()
    parity.half_figures(r, "half", f16, x32, x32)
    assert r.passed, r.summary()
    assert r.figures[-1].value == pytest.approx(0.2 / (1000.2 * 2.0 ** -11 + 2.0 ** -25), rel=1e-4)
    wrong = np.array([1000.0, 1000.5], np.float16)
    r = result()
    parity.half_figures(r, "half", wrong, x32, x32)
    assert [f.name for f in r.failures] == ["half max |f16 - f32| / float16 bound"]
    r = result()
    parity.half_figures(r, "half", wrong, x32, x32 + np.float32(0.02))  # a spread of 0.02 lets 0.5 in
    assert r.passed, r.summary()
    r = result()
    parity.half_figures(r, "half", x32, x32, x32)  # a float32 array is not float16 output
    assert [f.name for f in r.failures] == ["half dtype"]
    # below float16's normal range: absolute 2^-25
    tiny = np.array([3e-8], np.float32)
    assert parity.half_bound(tiny)[0] == pytest.approx(3e-8 * 2.0 ** -11 + 2.0 ** -25)


def test_round_to_nearest_float16_always_keeps_the_bound():
    rng = np.random.default_rng(0)
    x32 = (rng.standard_normal(200_000) * 10.0 ** rng.uniform(-9, 4, 200_000)).astype(np.float32)
    ratio = parity.max_ratio(x32.astype(np.float16), x32, parity.half_bound(x32))
    assert 0.99 < ratio <= 1.0  # tight: some values round by almost the whole half ulp
    truncated = (x32.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float16)
    assert parity.max_ratio(truncated, x32, parity.half_bound(x32)) > 1.0  # chopping instead of rounding


# comparison helpers ---------------------------------------------------------------------------------
def test_max_ratio_edge_cases():
    assert parity.max_ratio([1.0, 2.0], [1.0, 2.5], [1.0, 0.5]) == 1.0
    assert parity.max_ratio([0.0], [0.0], [0.0]) == 0.0  # equal values keep even a zero bound
    assert parity.max_ratio([0.0], [1e-9], [0.0]) == math.inf
    assert parity.max_ratio([1.0], [np.nan], [1.0]) == math.inf
    assert parity.max_ratio([1.0, 2.0], [1.0], [1.0]) == math.inf


def test_sanity_figures_demand_identical_values():
    r = result()
    r.same("targets", np.zeros(3), np.zeros(3))
    assert r.passed
    r.same("crop_box", np.zeros(3), np.array([0, 0, 1e-7]))
    assert [f.name for f in r.failures] == ["crop_box max |diff| (same CPU operators)"]


def test_a_figure_out_of_bounds_fails_the_check_and_is_reported():
    r = result()
    r.add("pixels max |diff| grey", 0.5, "<=", parity.CROP_MAX_GREY)
    assert r.passed
    r.add("worst image's mean |diff| grey", 1.5, "<=", parity.JPEG_MEAN_GREY)
    r.info["seconds"] = 1.0
    assert not r.passed
    assert r.summary() == "worst image's mean |diff| grey = 1.5 (needs <= 1)"
    assert r.to_dict()["figures"][1] == {"name": "worst image's mean |diff| grey", "value": 1.5, "op": "<=",
                                         "limit": 1.0, "passed": False}
    assert r.to_dict()["info"] == {"seconds": 1.0}


def test_crop_matrices_scale_a_square_of_the_image_to_the_crop():
    (m,) = parity.crop_matrices([(200, 300, 3)], 227, seed=1)
    assert m.shape == (2, 3) and m.dtype == np.float32
    det = abs(np.linalg.det(m[:, :2].astype(np.float64)))
    assert 227 / (1.2 * 300) <= math.sqrt(det) <= 227 / (0.5 * 300)
