"""``deeppose-fast predict SNAPSHOT IMAGE...``: joints as JSON and a PNG with the skeleton drawn."""
from __future__ import annotations

import warnings

import click


def parse_box(text: str) -> list[float]:
    """``x1,y1,x2,y2`` as four floats; a PredictError naming the option otherwise."""
    from deeppose_fast.predict import PredictError

    try:
        parsed = [float(v) for v in text.split(",")]
    except ValueError:
        parsed = []
    if len(parsed) != 4:
        raise PredictError(f"--box {text!r}: expected four numbers x1,y1,x2,y2")
    return parsed


@click.command()
@click.argument("snapshot", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--box", default=None,
              help="person box x1,y1,x2,y2 in pixels (all images); it may cross the image border (the crop is "
                   "clipped to the image); default: the whole image")
@click.option("--extension", type=float, default=None,
              help="box extension (default: the checkpoint's test extension)")
@click.option("--out", default="predictions", show_default=True, help="output folder")
def command(snapshot, images, box, extension, out):
    """Predict the joints of the person in each IMAGE with SNAPSHOT (checkpoint or run folder).

    Each IMAGE (a file; give a folder's images as e.g. DIR/*.jpg) gets NAME.joints.json and NAME.pose.png in
    --out, where NAME is the image's stem; where stems collide in one call, the file name (person.jpg,
    person.png); where those collide too, the name prefixed with its parent folders (a__person.jpg,
    b__person.jpg); the same file given twice gets -2. No output of a call overwrites another of that call.
    """
    from deeppose_fast import checkpoint, predict

    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, predict.PredictWarning):  # one plain line, not Python's warning format
            click.echo(f"warning: {message}", err=True)
        else:
            default_show(message, category, filename, lineno, file, line)

    try:
        parsed = parse_box(box) if box is not None else None
        for image in images:  # cheap checks first: nothing below should fail after the network ran
            predict.check_image_path(image)
        out_dir = predict.check_out_dir(out)
        names = predict.output_names(images)
        ckpt = checkpoint.load(snapshot)
        model = checkpoint.build_model(ckpt)
        cfg = ckpt.meta.get("config", {})
        ext = extension or cfg.get("eval_extension") or cfg.get("ext_max") or 2.0
        with warnings.catch_warnings():
            warnings.simplefilter("always", predict.PredictWarning)
            warnings.showwarning = show
            preds = predict.predict_images(model, list(images), boxes=[parsed] * len(images) if parsed else None,
                                           extension=float(ext))
        for p, name in zip(preds, names):
            j, png = predict.write_outputs(p, ckpt.meta.get("skeleton") or "lsp", out_dir, name)
            click.echo(f"{p.image}: {j}, {png}")
    except (checkpoint.CheckpointError, predict.PredictError, ValueError) as e:
        raise click.ClickException(str(e)) from None
