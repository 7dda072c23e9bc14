"""What ``deeppose-fast show`` draws: a contact sheet of the crops the network is fed (training crops under
an ``AugmentSpec``, or the deterministic evaluation crop), the target skeleton drawn on each.

Like ``train``, it refuses before any work a recipe whose crops reach outside the region ``prepare``
stored around each person or need more resolution than it stored (``precrop.require_covers``): such crops
would show repeated-pixel borders or upsampled pixels that training never sees from a data set prepared
for the recipe.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deeppose_fast import skeleton as skeletons
from deeppose_fast.datasets import precrop
from deeppose_fast.pipeline import dali
from deeppose_fast.pipeline.contract import split_info
from deeppose_fast.specs import AugmentSpec
from deeppose_fast.viz import contact_sheet, draw_skeleton, write_png


def sheet_of(batch: dict, skeleton, *, layout: str = "NHWC", columns: int = 8) -> np.ndarray:
    """(H', W', 3) uint8 BGR contact sheet of a batch (``images`` (B, S, S, 3) any scale, ``targets``
    (B, K, 2), ``weights`` (B, K)); each crop is stretched to 0-255 for display."""
    images = np.asarray(batch["images"], np.float32)
    if layout == "NCHW":
        images = images.transpose(0, 2, 3, 1)
    s = images.shape[1]
    tiles = []
    for img, t, w in zip(images, batch["targets"], batch["weights"]):
        lo, hi = float(img.min()), float(img.max())
        rgb = ((img - lo) * (255.0 / max(hi - lo, 1e-6))).clip(0, 255).astype(np.uint8)
        tiles.append(draw_skeleton(rgb[:, :, ::-1], (t.astype(np.float64) + 0.5) * s, skeleton, valid=w > 0))
    return contact_sheet(tiles, columns=columns)


def default_out(dataset, split: str) -> Path:
    return Path("runs") / "show" / f"{Path(dataset).resolve().name}-{split}.png"


def show(dataset, *, augment: AugmentSpec = AugmentSpec(), split: str = "train", count: int = 32,
         columns: int = 8, input_size: int = 227, eval_extension: float | None = None, seed: int = 0,
         device: str = "auto", out=None) -> tuple[Path, int]:
    """Write the contact sheet of ``count`` crops of ``dataset``'s ``split`` (training crops under
    ``augment``, or with ``eval_extension`` the evaluation crop at that box extension) to ``out``
    (default ``default_out``). Returns the PNG's path and the number of crops on it.

    Raises:
        PipelineError / ShardError: the folder is not a prepared data set, or a shard is damaged.
        DatasetError: the crops reach outside the stored pre-crop (names the manifest, the setting and
            the ``prepare`` option that fixes it).
        ValueError: a skeleton ``show`` cannot draw.
    """
    info = split_info(dataset, split)
    if info.skeleton not in skeletons.SKELETONS:
        raise ValueError(f"{dataset}: skeleton {info.skeleton!r} is not one show can draw")
    if eval_extension is None:
        precrop.require_covers(dataset, augment, input_size)
        batch = next(dali.train_batches(dataset, batch_size=count, split=split, input_size=input_size,
                                        augment=augment, seed=seed, device=device))
    else:
        # the evaluation crop: one fixed extension, centred, never flipped
        precrop.require_covers(dataset, precrop.eval_augment(eval_extension), input_size)
        batch = next(dali.eval_batches(dataset, split=split, batch_size=count, input_size=input_size,
                                       extension=eval_extension, device=device))
    sheet = sheet_of(batch, skeletons.get(info.skeleton), columns=columns)
    return write_png(out if out is not None else default_out(dataset, split), sheet), len(batch["images"])
