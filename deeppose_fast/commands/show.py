"""``deeppose-fast show DATASET``: a contact sheet PNG of the crops the network is fed, skeletons drawn."""
from __future__ import annotations

from pathlib import Path

import click


def sheet_of(batch: dict, skeleton, *, layout: str = "NHWC", columns: int = 8):
    """(H', W', 3) uint8 BGR contact sheet of a batch (``images`` (B, S, S, 3) any scale, ``targets``
    (B, K, 2), ``weights`` (B, K)); each crop is stretched to 0-255 for display."""
    import numpy as np

    from deeppose_fast.viz import contact_sheet, draw_skeleton

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


@click.command("show")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG to write [default: runs/show/DATASET-SPLIT.png].")
@click.option("--split", default="train", show_default=True)
@click.option("--count", type=click.IntRange(1, 512), default=32, show_default=True, help="Crops on the sheet.")
@click.option("--columns", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--input-size", type=click.IntRange(min=8), default=227, show_default=True)
@click.option("--ext-range", nargs=2, type=float, default=(1.5, 2.0), show_default=True,
              help="Box extension range of the training crop.")
@click.option("--rotation", type=click.FloatRange(0, 180), default=0.0, show_default=True,
              help="Largest rotation in degrees (0 = DTF).")
@click.option("--scale-jitter", type=click.FloatRange(0, 0.9), default=0.0, show_default=True)
@click.option("--flip/--no-flip", default=True, show_default=True)
@click.option("--eval", "eval_extension", type=click.FloatRange(min=0.1), default=None,
              help="Show the deterministic evaluation crop at this extension instead.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
def command(dataset, out, split, count, columns, input_size, ext_range, rotation, scale_jitter, flip,
            eval_extension, seed, device):
    """Write a contact sheet of augmented training crops of DATASET (a folder made by `prepare`) with their
    target skeletons, to see what the network is fed.

    \b
    Examples:
      deeppose-fast show data/lsp-ext
      deeppose-fast show data/mpii --ext-range 1.0 1.2 --rotation 15 --out mpii.png
      deeppose-fast show data/lsp-ext --split test --eval 2.0
    """
    from deeppose_fast import skeleton as skeletons
    from deeppose_fast.pipeline import dali
    from deeppose_fast.pipeline.native import NativeBuildError
    from deeppose_fast.viz import write_png

    try:
        info = dali.split_info(dataset, split)
        if info.skeleton not in skeletons.SKELETONS:
            raise click.ClickException(f"{dataset}: skeleton {info.skeleton!r} is not one show can draw")
        if eval_extension is None:
            batch = next(dali.train_batches(dataset, batch_size=count, split=split, input_size=input_size,
                                            ext_range=tuple(ext_range), rotation=rotation,
                                            scale_jitter=scale_jitter, flip=flip, seed=seed, device=device))
        else:
            batch = next(dali.eval_batches(dataset, split=split, batch_size=count, input_size=input_size,
                                           extension=eval_extension, device=device))
    except (dali.PipelineError, NativeBuildError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    sheet = sheet_of(batch, skeletons.get(info.skeleton), columns=columns)
    out = out if out is not None else Path("runs") / "show" / f"{Path(dataset).resolve().name}-{split}.png"
    path = write_png(out, sheet)
    click.echo(f"wrote {path} ({len(batch['images'])} crops of {input_size} x {input_size}, split {split!r})")
