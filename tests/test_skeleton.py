"""deeppose_fast.skeleton: the torso diagonals and the torso diameter of the cascade (lengths worked out by
hand on 3-4-5 and 5-12-13 triangles)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from deeppose_fast.skeleton import LSP, MPII


def test_torso_diagonals_join_opposite_shoulders_and_hips():
    # LSP: r_hip 2, l_hip 3, r_shoulder 8, l_shoulder 9; MPII: r_hip 2, l_hip 3, r_shoulder 12, l_shoulder 13
    assert LSP.torso_diagonals == ((9, 2), (8, 3))
    assert MPII.torso_diagonals == ((13, 2), (12, 3))
    for sk in (LSP, MPII):
        # a mirrored picture swaps the two diagonals, so the diameter does not change under a flip
        (a0, b0), (a1, b1) = sk.torso_diagonals
        assert (sk.flip_permutation[a0], sk.flip_permutation[b0]) == (a1, b1)


def _torso(sk, l_shoulder, r_hip, r_shoulder, l_hip):
    """(K, 2) joints far from the torso everywhere else, the four torso joints as given."""
    j = np.full((sk.num_joints, 2), 1000.0)
    for name, xy in (("l_shoulder", l_shoulder), ("r_hip", r_hip), ("r_shoulder", r_shoulder), ("l_hip", l_hip)):
        j[sk.index(name)] = xy
    return j


@pytest.mark.parametrize("sk", [LSP, MPII], ids=["lsp", "mpii"])
def test_torso_diameter_is_the_mean_of_the_annotated_diagonals(sk):
    # l_shoulder -> r_hip: (3, 4), length 5; r_shoulder -> l_hip: (5, 12), length 13; mean 9
    j = _torso(sk, (10, 20), (13, 24), (40, 20), (45, 32))
    assert sk.torso_diameter(j) == pytest.approx(9.0)
    one = j.copy()
    one[sk.index("l_hip"), 1] = np.nan  # one coordinate missing: that diagonal is not annotated
    assert sk.torso_diameter(one) == pytest.approx(5.0)
    other = j.copy()
    other[sk.index("l_shoulder")] = np.nan
    assert sk.torso_diameter(other) == pytest.approx(13.0)
    none = other.copy()
    none[sk.index("r_shoulder")] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" warning
        assert np.isnan(sk.torso_diameter(none))
    # joints outside the torso do not matter
    far = j.copy()
    far[[k for k in range(sk.num_joints) if k not in np.ravel(sk.torso_diagonals)]] = np.nan
    assert sk.torso_diameter(far) == pytest.approx(9.0)


def test_torso_diameter_keeps_the_leading_axes():
    j = _torso(LSP, (0, 0), (3, 4), (0, 0), (5, 12))  # 5 and 13
    batch = np.stack([j, j * 2, j * 3]).reshape(3, 1, 14, 2)
    batch[2, 0, LSP.index("r_hip")] = np.nan
    d = LSP.torso_diameter(batch)
    assert d.shape == (3, 1)
    np.testing.assert_allclose(d[:, 0], [9.0, 18.0, 39.0])  # the third: 3 x 13 alone
    assert LSP.torso_diameter(j).shape == ()


@pytest.mark.parametrize("shape", [(14,), (14, 3), (16, 2), (2, 14)])
def test_torso_diameter_refuses_other_layouts(shape):
    with pytest.raises(ValueError, match=r"\(\.\.\., 14, 2\) for lsp"):
        LSP.torso_diameter(np.zeros(shape))
