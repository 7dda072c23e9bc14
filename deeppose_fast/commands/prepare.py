"""``deeppose-fast prepare NAME``: parse an official data set (or generate the synthetic one), split it and
pack it into tar shards with a manifest (see ``deeppose_fast.datasets.prepare``)."""
from __future__ import annotations

import warnings
from pathlib import Path

import click

from deeppose_fast.datasets import DTF_SEED, NAMES, SPLIT_MODES, DatasetError, DatasetWarning
from deeppose_fast.datasets.download import DownloadError
from deeppose_fast.datasets.precrop import DEFAULT_RESOLUTION, DEFAULT_RESOLUTION_MARGIN, PrecropRule
from deeppose_fast.datasets.prepare import prepare
from deeppose_fast.datasets.shards import ShardError
from deeppose_fast.specs import AugmentSpec


@click.command("prepare")
@click.argument("name", type=click.Choice(NAMES))
@click.option("--source", "sources", multiple=True, type=click.Path(path_type=Path),
              help="The official layout: one folder, or the original archives (zip, tar.gz; repeat the "
                   "option for several).")
@click.option("--download", is_flag=True, help="Fetch the official archives (resumable) into OUT/downloads.")
@click.option("--base-url", default=None, envvar="DEEPPOSE_FAST_DATA_URL",
              help="Fetch the archives from this address instead of the official one (a mirror).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: ./data/NAME].")
@click.option("--split-mode", type=click.Choice(SPLIT_MODES), default="person", show_default=True,
              help="MPII: split people (DTF, seed 1701) or whole images.")
@click.option("--seed", type=int, default=DTF_SEED, show_default=True, help="Seed of the MPII / synthetic split.")
@click.option("--records-per-shard", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--precrop/--no-precrop", default=True, show_default=True,
              help="Store a region around each person re-encoded as JPEG, or the original image bytes.")
@click.option("--jpeg-quality", type=click.IntRange(50, 100), default=95, show_default=True,
              help="Quality of the re-encoded pre-crop.")
@click.option("--ext-max", type=click.FloatRange(min=1.0), default=2.0, show_default=True,
              help="Largest crop extension the pre-crop must allow.")
@click.option("--max-shift", type=click.FloatRange(min=0.0), default=0.1, show_default=True,
              help="Largest shift of the crop centre (fraction of the crop size) the pre-crop must allow.")
@click.option("--max-rotation", type=click.FloatRange(0.0, 90.0), default=0.0, show_default=True,
              help="Largest rotation (degrees) the pre-crop must allow.")
@click.option("--max-scale-jitter", type=click.FloatRange(0.0, 0.9), default=0.0, show_default=True,
              help="Largest zoom j (scale 1 - j to 1 + j) the pre-crop must allow.")
@click.option("--min-extension", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True,
              help="Smallest crop extension of the recipes: regions are stored at the resolution its crop needs.")
@click.option("--resolution", type=click.IntRange(min=0), default=DEFAULT_RESOLUTION, show_default=True,
              help="Network input side that the stored regions serve at least 1:1 (0: keep the source resolution).")
@click.option("--resolution-margin", type=click.FloatRange(min=0.0), default=DEFAULT_RESOLUTION_MARGIN,
              show_default=True, help="Store this fraction more pixels than the smallest crop needs.")
@click.option("--scale", default="small", show_default=True,
              help="synthetic: size of the generated data set (small; mpii: MPII's size; real: MPII's size and frame sizes).")
@click.option("--size", "num_images", type=click.IntRange(min=1), default=None,
              help="synthetic: number of images (overrides the scale).")
@click.option("--generator-seed", type=int, default=0, show_default=True, help="synthetic: generator seed.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads decoding and encoding images (and processes generating the synthetic set).")
@click.option("--replace", is_flag=True,
              help="Replace another data set in OUT (another name, source or setting), and files named like "
                   "its shards that no manifest lists.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def command(name, sources, download, base_url, out, split_mode, seed, records_per_shard, precrop, jpeg_quality,
            ext_max, max_shift, max_rotation, max_scale_jitter, min_extension, resolution, resolution_margin, scale,
            num_images, generator_seed, workers, replace,
            quiet):
    """Prepare data set NAME (lsp, lspet, lsp-ext, mpii, synthetic) into shards + manifest.json.

    The new data set is built beside what OUT holds and swapped in when complete: a failure or Ctrl-C
    leaves OUT as it was (downloads excepted: they resume), and files prepare did not write are never
    deleted. Re-running the same data set with the same settings replaces it; OUT holding another data
    set needs --replace.

    \b
    Examples:
      deeppose-fast prepare synthetic --scale small
      deeppose-fast prepare lsp-ext --source lsp_dataset_original.zip --source lspet_dataset.zip
      deeppose-fast prepare mpii --download --out data/mpii
    """
    out = (out if out is not None else Path("data") / name).expanduser().resolve()
    # the largest and the smallest crops the recipes will draw: the pre-crop is sized from them
    if min_extension > ext_max:
        raise click.BadParameter(f"{min_extension:g} is larger than --ext-max {ext_max:g}",
                                 param_hint="'--min-extension'")
    widest = AugmentSpec(ext_min=min_extension, ext_max=ext_max, shift=max_shift, rotation=max_rotation,
                         scale_jitter=max_scale_jitter)
    rule = PrecropRule.from_augment(widest, resolution, enabled=precrop, jpeg_quality=jpeg_quality,
                                    resolution_margin=resolution_margin)
    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DatasetWarning):  # the skips, as plain lines, not Python warnings
            click.echo(f"warning: {message}", err=True)
        else:
            default_show(message, category, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DatasetWarning)
            warnings.showwarning = show
            manifest = prepare(name, out, source=list(sources) or None, download=download, base_url=base_url,
                               split_mode=split_mode, seed=seed, records_per_shard=records_per_shard,
                               rule=rule, workers=workers, num_images=num_images, scale=scale,
                               synthetic_seed=generator_seed, progress=not quiet, replace=replace)
    except (DatasetError, DownloadError, ShardError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        kept = f" (downloads so far stay in {out / 'downloads'} and resume next time)" if download else ""
        click.echo(f"interrupted; nothing was changed in {out}{kept}", err=True)
        raise click.exceptions.Exit(130) from None
    splits = manifest["splits"]
    click.echo(f"{name}: {splits['train']['count']} train, {splits['test']['count']} test people in "
               f"{len(splits['train']['shards']) + len(splits['test']['shards'])} shards -> {out} "
               f"({manifest['seconds']:.1f} s)")
