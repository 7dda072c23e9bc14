"""``deeppose-fast predict SNAPSHOT IMAGE...``: joints as JSON and a PNG with the skeleton drawn."""
from __future__ import annotations

import click


@click.command()
@click.argument("snapshot", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--box", default=None, help="person box x1,y1,x2,y2 in pixels (all images); default: the whole image")
@click.option("--extension", type=float, default=None,
              help="box extension (default: the checkpoint's test extension)")
@click.option("--out", default="predictions", show_default=True, help="output folder")
def command(snapshot, images, box, extension, out):
    """Predict the joints of the person in each IMAGE with SNAPSHOT (checkpoint or run folder)."""
    from deeppose_fast import checkpoint, predict

    try:
        parsed = None
        if box is not None:
            try:
                parsed = [float(v) for v in box.split(",")]
            except ValueError:
                parsed = []
            if len(parsed) != 4:
                raise predict.PredictError(f"--box {box!r}: expected four numbers x1,y1,x2,y2")
        ckpt = checkpoint.load(snapshot)
        model = checkpoint.build_model(ckpt)
        cfg = ckpt.meta.get("config", {})
        ext = extension or cfg.get("eval_extension") or cfg.get("ext_max") or 2.0
        preds = predict.predict_images(model, list(images), boxes=[parsed] * len(images) if parsed else None,
                                       extension=float(ext))
        for p in preds:
            j, png = predict.write_outputs(p, ckpt.meta.get("skeleton") or "lsp", out)
            click.echo(f"{p.image}: {j}, {png}")
    except (checkpoint.CheckpointError, predict.PredictError, ValueError) as e:
        raise click.ClickException(str(e)) from None
