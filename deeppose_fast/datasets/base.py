"""The shared vocabulary of the data set parsers: ``PoseData`` (the people of a data set as arrays, N
people, K joints), ``DatasetError`` / ``DatasetWarning``, the names and the seeded splits. The pixel
convention and the data set names are described in ``deeppose_fast.datasets``."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.io

from deeppose_fast.skeleton import Skeleton

NAMES = ("lsp", "lspet", "lsp-ext", "mpii", "synthetic")
SPLIT_MODES = ("person", "image")
DTF_SEED = 1701
TEST_FRACTION = 0.1
SYNTHETIC_MIN_JOINTS = 8


class DatasetError(ValueError):
    """A data set file is missing, unreadable or malformed; the message names the file and the problem."""


class DatasetWarning(UserWarning):
    """Some people were skipped while parsing (the message says how many and why)."""


def load_mat(path: str | os.PathLike, **kwargs) -> dict:
    """``scipy.io.loadmat(path, **kwargs)`` for an annotation file that must exist.

    Raises:
        DatasetError: naming the file when it is not a MATLAB file, or a truncated or corrupt one. For
            such input scipy's reader raises many kinds of exception (``MatReadError``, ``IndexError``,
            ``ValueError``, ``OSError``, zlib's, ...), so any of them means a bad file; only running out
            of memory is passed on as it is.
    """
    try:
        return scipy.io.loadmat(str(path), **kwargs)
    except MemoryError:
        raise
    except Exception as e:
        raise DatasetError(f"{path}: not a readable MATLAB file (corrupt, truncated or not a .mat file: "
                           f"{type(e).__name__}: {e}); get the original file again") from None


@dataclass
class PoseData:
    """The people of a data set as arrays (N people, K joints).

    Attributes:
        image_paths: (N,) str, absolute paths of the source images.
        image_ids: (N,) int64, index of the source image (unique per image within the data set).
        joints: (N, K, 2) float32 continuous pixel coordinates, NaN where not annotated.
        visible: (N, K) bool, False where not annotated (or where the data set gives no flag).
        head_box: (N, 4) float32 ``x1, y1, x2, y2`` continuous pixels, NaN where the data set has none.
        split: (N,) ``<U5`` ``"train"`` / ``"test"``.
        skeleton: the joint layout (``deeppose_fast.skeleton``).
        skipped: reason -> number of people left out while parsing.
        name: the data set name (one of ``NAMES``).
        rect_ids: (N,) int64, index of the person within its image (MPII ``annorect`` index; 0 for LSP).
        annotation_files: the annotation files parsed (for checksums in the manifest).
    """

    image_paths: np.ndarray
    image_ids: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    head_box: np.ndarray
    split: np.ndarray
    skeleton: Skeleton
    skipped: dict = field(default_factory=dict)
    name: str = ""
    rect_ids: np.ndarray | None = None
    annotation_files: tuple = ()

    def __post_init__(self):
        n = len(self.image_paths)
        k = self.skeleton.num_joints
        self.image_paths = np.asarray(self.image_paths, dtype=str)
        self.image_ids = np.asarray(self.image_ids, dtype=np.int64)
        self.joints = np.asarray(self.joints, dtype=np.float32).reshape(n, k, 2)
        self.visible = np.asarray(self.visible, dtype=bool).reshape(n, k)
        self.head_box = np.asarray(self.head_box, dtype=np.float32).reshape(n, 4)
        self.split = np.asarray(self.split, dtype="<U5")
        self.rect_ids = (np.zeros(n, np.int64) if self.rect_ids is None
                         else np.asarray(self.rect_ids, dtype=np.int64))
        for attr in ("image_ids", "split", "rect_ids"):
            if getattr(self, attr).shape != (n,):
                raise ValueError(f"PoseData.{attr} has shape {getattr(self, attr).shape}, expected ({n},)")
        bad = set(np.unique(self.split)) - {"train", "test"}
        if bad:
            raise ValueError(f"PoseData.split holds {sorted(bad)}; expected 'train' / 'test'")

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def annotated(self) -> np.ndarray:
        """(N, K) bool: the joint has coordinates."""
        return np.isfinite(self.joints).all(axis=-1)

    def subset(self, index) -> "PoseData":
        """The people selected by a boolean mask or an index array (same skeleton, same ``skipped``)."""
        return PoseData(self.image_paths[index], self.image_ids[index], self.joints[index],
                        self.visible[index], self.head_box[index], self.split[index], self.skeleton,
                        dict(self.skipped), self.name, self.rect_ids[index], self.annotation_files)

    def counts(self) -> dict:
        """``{"train": n, "test": m}``."""
        return {s: int((self.split == s).sum()) for s in ("train", "test")}


def person_split(n: int, seed: int = DTF_SEED, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """DTF's person-level split: ``np.random.seed(seed); perm = np.random.permutation(n)``; the people
    ``perm[:int(test_fraction * n)]`` are test. Uses a private ``RandomState`` (same stream as the
    global seed, without touching NumPy's global state). Returns (n,) ``<U5``."""
    perm = np.random.RandomState(seed).permutation(n)
    split = np.full(n, "train", dtype="<U5")
    split[perm[:int(n * test_fraction)]] = "test"
    return split


def image_split(image_ids: np.ndarray, seed: int = DTF_SEED,
                test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """An image-level split: the distinct images (sorted ids) are permuted with ``RandomState(seed)``
    and the first ``int(test_fraction * M)`` are test, so no image has people in both sets.

    Args:
        image_ids: (N,) int, the source image of each person.
    Returns:
        (N,) ``<U5`` ``"train"`` / ``"test"``.
    """
    image_ids = np.asarray(image_ids)
    unique = np.unique(image_ids)
    perm = np.random.RandomState(seed).permutation(len(unique))
    test_images = unique[perm[:int(len(unique) * test_fraction)]]
    return np.where(np.isin(image_ids, test_images), "test", "train").astype("<U5")


def warn_skipped(skipped: dict, where: str) -> None:
    """One ``DatasetWarning`` per reason with a non-zero count."""
    for reason, count in skipped.items():
        if count:
            warnings.warn(f"{where}: skipped {count} people: {reason}", DatasetWarning, stacklevel=3)
