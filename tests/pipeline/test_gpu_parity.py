"""Backend parity: the same samples through the DALI pipeline on the CPU and on the GPU (mixed JPEG
decode, GPU warp and normalisation). The comparisons and their tolerances live in
``deeppose_fast.pipeline.parity`` (``deeppose-fast doctor`` runs the same ones); the GPU tests are skipped
where no GPU is present. The CPU tests run the same comparisons with the CPU on both sides, so that the
comparison code itself runs on every host."""
from __future__ import annotations

import pytest

from deeppose_fast.pipeline import parity


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


def test_a_figure_out_of_bounds_fails_the_check():
    r = parity.ParityResult("demo")
    r.add("pixels mean |diff| grey", 0.5, "<", parity.EVAL_MEAN_GREY)
    assert r.passed
    r.add("pixels p99 |diff| grey", 9.0, "<", parity.EVAL_P99_GREY)
    assert not r.passed
    assert r.summary() == "pixels p99 |diff| grey = 9 (needs < 8.0)"
    assert r.to_dict()["figures"][1] == {"name": "pixels p99 |diff| grey", "value": 9.0, "op": "<",
                                         "limit": 8.0, "passed": False}


def test_the_stated_tolerances():
    """The bounds the GPU tests have always stated (issue 11 asks for them to be re-derived: not done)."""
    assert (parity.TARGET_ATOL, parity.CROP_BOX_ATOL) == (1e-6, 1e-4)
    assert (parity.EVAL_MEAN_GREY, parity.EVAL_P99_GREY, parity.TRAIN_MEAN_GREY) == (1.0, 8.0, 1.0)
    assert (parity.DOT_LABEL_ACCURACY, parity.DOT_MEAN_ERROR_PX, parity.NORMALISED_MEAN) == (1.0, 0.5, 0.02)
