"""``deeppose-fast synthetic OUT``: write the synthetic data set in one of the official file formats (LSP,
LSPET or MPII: images and annotation file, plus its ground truth ``synthetic_truth.npz``), e.g. to try
``prepare lsp --source OUT`` (``prepare synthetic`` generates the MPII format itself)."""
from __future__ import annotations

import time
from pathlib import Path

import click

from deeppose_fast.datasets import synthetic


@click.command("synthetic")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(sorted(synthetic.WRITERS)), default="mpii", show_default=True,
              help="The official layout to write.")
@click.option("--scale", type=click.Choice(sorted(synthetic.SCALES)), default="small", show_default=True,
              help="Size: small, mpii (the real data sets' sizes) or real (MPII's size at MPII's frame sizes).")
@click.option("--size", "num_images", type=click.IntRange(min=1), default=None,
              help="Number of images (overrides the scale).")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes rendering images [default: 2 for 400 images or more, else 1].")
def command(out, fmt, scale, num_images, seed, workers):
    """Write a synthetic data set in the official FORMAT into OUT.

    \b
    Examples:
      deeppose-fast synthetic data/synthetic-lsp --format lsp
      deeppose-fast prepare lsp --source data/synthetic-lsp
    """
    start = time.perf_counter()
    try:
        truth = synthetic.generate(out, fmt, scale, seed, num_images=num_images, workers=workers)
    except ValueError as e:  # e.g. more images than LSP's 4-digit names allow
        raise click.ClickException(str(e)) from None
    seconds = time.perf_counter() - start
    images = len(set(truth.image_index.tolist()))
    click.echo(f"{out}: {images} images, {len(truth.image_index)} people ({int(truth.annotated.sum())} annotated) "
               f"in {seconds:.1f} s ({images / seconds:.0f} images/s)")
