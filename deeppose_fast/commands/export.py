"""``deeppose-fast export SNAPSHOT OUT``: a SavedModel that serves with TensorFlow alone."""
from __future__ import annotations

import click

from deeppose_fast import checkpoint, export


@click.command()
@click.argument("snapshot", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--overwrite", is_flag=True, help="replace OUT if it holds an earlier export (never anything else)")
def command(snapshot, out, overwrite):
    """Export SNAPSHOT (checkpoint or run folder) to the SavedModel folder OUT.

    OUT must be a new path, an empty folder (filled in place), or with --overwrite an earlier export (a
    folder holding deeppose_fast_export.json, saved_model.pb and nothing else). OUT may not be, hold or lie
    inside SNAPSHOT or its run folder. The export is written beside OUT and moved into place when complete.
    """
    try:
        path = export.export_savedmodel(snapshot, out, overwrite=overwrite)
    except export.ExportExists as e:
        raise click.ClickException(f"{e}; pass --overwrite to replace an earlier export") from None
    except (checkpoint.CheckpointError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {path} (signatures: serving_default, predict_crops, predict_image)")
