"""Small synthetic data sets in the official LSP, LSPET and MPII formats, written once per session.

Each folder also holds ``synthetic_truth.npz`` (``synthetic.Truth.load(folder)``): the ground truth the
generator drew, to compare parsers against.
"""
from __future__ import annotations

import pytest

from deeppose_fast.datasets import synthetic


@pytest.fixture(scope="session")
def synthetic_lsp_dir(tmp_path_factory):
    """LSP format, 12 images (``images/im0001.jpg`` ..., ``joints.mat`` 3 x 14 x 12)."""
    root = tmp_path_factory.mktemp("synthetic-lsp")
    synthetic.write_lsp(root, 12, seed=0, workers=1)
    return root


@pytest.fixture(scope="session")
def synthetic_lspet_dir(tmp_path_factory):
    """LSPET format, 24 images (``images/im00001.jpg`` ..., ``joints.mat`` 14 x 3 x 24)."""
    root = tmp_path_factory.mktemp("synthetic-lspet")
    synthetic.write_lspet(root, 24, seed=0, workers=1)
    return root


@pytest.fixture(scope="session")
def synthetic_mpii_dir(tmp_path_factory):
    """MPII format, 40 images of 320 x 240 with 1-3 people (``images/NNNNNNNNN.jpg``,
    ``mpii_human_pose_v1_u12_1.mat``)."""
    root = tmp_path_factory.mktemp("synthetic-mpii")
    synthetic.write_mpii(root, 40, seed=0, image_size=(320, 240), workers=1)
    return root
