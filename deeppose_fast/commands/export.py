"""``deeppose-fast export SNAPSHOT OUT``: a SavedModel that serves with TensorFlow alone."""
from __future__ import annotations

import click


@click.command()
@click.argument("snapshot", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
def command(snapshot, out, overwrite):
    """Export SNAPSHOT (checkpoint or run folder) to the SavedModel folder OUT."""
    from deeppose_fast import checkpoint, export

    try:
        path = export.export_savedmodel(snapshot, out, overwrite=overwrite)
    except (checkpoint.CheckpointError, FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {path} (signatures: serving_default, predict_crops, predict_image)")
