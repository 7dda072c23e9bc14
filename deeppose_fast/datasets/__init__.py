"""Parsed pose data sets: ``read(name, root)`` returns the people of an official data set as arrays.

Shapes: N people, K joints (14 for the LSP family, 16 for MPII and synthetic).

Pixel convention (docs/ARCHITECTURE.md): every coordinate is a *continuous* pixel coordinate, the
pixel in column i, row j (0-based) covering ``[i, i+1) x [j, j+1)`` with its centre at ``(i + 0.5,
j + 0.5)``. LSP and MPII annotate 1-based MATLAB pixel indices, so the parsers subtract 0.5
(``x = x_file - 0.5``); DALI uses the same convention, so nothing downstream adds a half-pixel shift.

Names (``NAMES``):

- ``lsp``: LSP alone, train = images 1..1000, test = 1001..2000 (in general the first ``N // 2``);
- ``lspet``: LSP-extended alone, every person in train;
- ``lsp-ext``: LSP + LSPET, the DTF split: train = LSPET 1..10000 + LSP 1..1000 (11000), test = LSP
  1001..2000 (1000);
- ``mpii``: MPII people from training images with all 16 joints annotated (19919 in the real data),
  split per person by DTF's seed-1701 permutation (``split_mode="person"``: 17928 / 1991, one image
  may land in both sets) or per image (``split_mode="image"``: 10 % of the images, no image in both);
- ``synthetic``: the generated data set (MPII format, ``deeppose_fast.datasets.synthetic``): every
  person with at least ``SYNTHETIC_MIN_JOINTS`` annotated joints (generated people may have joints
  out of frame, which the generator leaves unannotated), split per image with a seeded 10 % test set.
"""
from deeppose_fast.datasets.base import (DTF_SEED, NAMES, SPLIT_MODES, SYNTHETIC_MIN_JOINTS, TEST_FRACTION,
                                         DatasetError, DatasetWarning, PoseData, image_split, load_mat,
                                         person_split, warn_skipped)
from deeppose_fast.datasets.reader import read

__all__ = ["DTF_SEED", "NAMES", "SPLIT_MODES", "SYNTHETIC_MIN_JOINTS", "TEST_FRACTION", "DatasetError",
           "DatasetWarning", "PoseData", "image_split", "load_mat", "person_split", "read", "warn_skipped"]
