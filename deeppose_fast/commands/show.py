"""``deeppose-fast show DATASET``: a contact sheet PNG of the crops the network is fed, skeletons drawn."""
from __future__ import annotations

from pathlib import Path

import click

from deeppose_fast.datasets import DatasetError
from deeppose_fast.datasets.shards import ShardError
from deeppose_fast.pipeline.contract import PipelineError
from deeppose_fast.pipeline.native import NativeBuildError
from deeppose_fast.show import show
from deeppose_fast.specs import AugmentSpec

_RECIPE = AugmentSpec()  # the option defaults: the reference recipe


@click.command("show")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG to write [default: runs/show/DATASET-SPLIT.png].")
@click.option("--split", default="train", show_default=True)
@click.option("--count", type=click.IntRange(1, 512), default=32, show_default=True, help="Crops on the sheet.")
@click.option("--columns", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--input-size", type=click.IntRange(min=8), default=227, show_default=True)
@click.option("--ext-range", nargs=2, type=float, default=_RECIPE.ext_range, show_default=True,
              help="Box extension range of the training crop.")
@click.option("--shift", type=click.FloatRange(min=0), default=_RECIPE.shift, show_default=True,
              help="Largest shift of the crop centre, as a fraction of the crop size.")
@click.option("--rotation", type=click.FloatRange(0, 180), default=_RECIPE.rotation, show_default=True,
              help="Largest rotation in degrees (0 = DTF).")
@click.option("--scale-jitter", type=click.FloatRange(0, 0.9), default=_RECIPE.scale_jitter, show_default=True)
@click.option("--flip/--no-flip", default=_RECIPE.flip, show_default=True)
@click.option("--eval", "eval_extension", type=click.FloatRange(min=0.1), default=None,
              help="Show the deterministic evaluation crop at this extension instead.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
def command(dataset, out, split, count, columns, input_size, ext_range, shift, rotation, scale_jitter, flip,
            eval_extension, seed, device):
    """Write a contact sheet of augmented training crops of DATASET (a folder made by `prepare`) with their
    target skeletons, to see what the network is fed.

    \b
    Examples:
      deeppose-fast show data/lsp-ext
      deeppose-fast show data/mpii --ext-range 1.0 1.2 --rotation 15 --out mpii.png
      deeppose-fast show data/lsp-ext --split test --eval 2.0
    """
    try:
        augment = AugmentSpec(*ext_range, shift=shift, flip=flip, rotation=rotation, scale_jitter=scale_jitter)
        path, crops = show(dataset, augment=augment, split=split, count=count, columns=columns,
                           input_size=input_size, eval_extension=eval_extension, seed=seed, device=device, out=out)
    except (PipelineError, ShardError, DatasetError, NativeBuildError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {path} ({crops} crops of {input_size} x {input_size}, split {split!r})")
