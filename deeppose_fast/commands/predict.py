"""``deeppose-fast predict SNAPSHOT IMAGE...``: joints as JSON and a PNG with the skeleton drawn
(``predict.predict_files``)."""
from __future__ import annotations

import warnings

import click

from deeppose_fast import checkpoint, predict


def parse_box(text: str) -> list[float]:
    """``x1,y1,x2,y2`` as four floats; a PredictError naming the option otherwise."""
    try:
        parsed = [float(v) for v in text.split(",")]
    except ValueError:
        parsed = []
    if len(parsed) != 4:
        raise predict.PredictError(f"--box {text!r}: expected four numbers x1,y1,x2,y2")
    return parsed


def _plain_predict_warnings(default_show):
    """A ``warnings.showwarning`` printing a PredictWarning as one plain line on stderr (not Python's
    warning format) and others with ``default_show``."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, predict.PredictWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            default_show(message, category, filename, lineno, file, line)

    return show


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", predict.PredictWarning)
            warnings.showwarning = _plain_predict_warnings(warnings.showwarning)
            written = predict.predict_files(snapshot, images, box=None if box is None else parse_box(box),
                                            extension=extension, out_dir=out)
    except (checkpoint.CheckpointError, predict.PredictError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    for p, json_path, png_path in written:
        click.echo(f"{p.image}: {json_path}, {png_path}")
