"""``deeppose-fast eval SNAPSHOT``: a checkpoint's tables over a sweep of test-crop extensions
(``scoring.score_checkpoint``)."""
from __future__ import annotations

import click

from deeppose_fast import checkpoint, scoring
from deeppose_fast.cascade import evaluate, links
from deeppose_fast.datasets.shards import ShardError
from deeppose_fast.pipeline.contract import PipelineError
from deeppose_fast.pipeline.native import NativeBuildError

DEFAULT_SWEEP = "1.0:2.0:0.1"  # DTF's test script


@click.command()
@click.argument("snapshot", type=click.Path())
@click.option("--data", default=None, help="prepared data set folder (default: the one it was trained on)")
@click.option("--split", default="test", show_default=True)
@click.option("--extensions", default=None,
              help="box extensions: START:STOP:STEP (inclusive) or a comma list, e.g. 2.0 (default 1.0:2.0:0.1; "
                   "a cascade: one extension, default its stage 1's test extension)")
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--limit", default=0, show_default=True, type=int, help="first N people only (0 = all)")
@click.option("--json", "out_json", default=None,
              help="output JSON (default: SNAPSHOT/eval-<split>.json)")
@click.option("--flip-test", is_flag=True,
              help="average with the prediction on the mirrored crop (not in the reference's test script)")
def command(snapshot, data, split, extensions, batch_size, limit, out_json, flip_test):
    """Evaluate SNAPSHOT (a checkpoint folder, or a run folder: its newest checkpoint) under the dtf and
    official protocols; prints the reference's tables and writes them as JSON. A cascade stage's SNAPSHOT
    runs the whole cascade and shows every stage side by side, with a PNG of their PCKh curves."""
    note = lambda text: click.echo(text, err=True)  # noqa: E731
    try:
        sweep = parse_extensions(extensions) if extensions else None
        ckpt = checkpoint.load(snapshot)
        if links.stage_of(ckpt) > 1:  # a cascade: every stage, side by side
            sweep = sweep or (None,)
            if len(sweep) != 1 or flip_test:
                raise ValueError(f"{ckpt.path}: a cascade is evaluated at one stage-1 extension and without "
                                 f"--flip-test; pass --extensions E")
            evaluate.score_cascade(ckpt, data, extension=sweep[0], batch_size=batch_size, limit=limit, split=split,
                                   out_json=out_json, echo=click.echo, note=note)
        else:
            scoring.score_checkpoint(ckpt, data, extensions=sweep or parse_extensions(DEFAULT_SWEEP),
                                     batch_size=batch_size, limit=limit, split=split, out_json=out_json,
                                     flip_test=flip_test, echo=click.echo, note=note)
    except scoring.OutputNotWritable as e:
        raise click.ClickException(f"{e}; pass --json PATH to write the results elsewhere") from None
    except (ValueError, FileNotFoundError, ShardError, PipelineError, NativeBuildError) as e:
        # user-fixable data and checkpoint problems: each message names the path and the fix
        raise click.ClickException(str(e)) from None


def parse_extensions(text: str) -> tuple[float, ...]:
    """``"1.0:2.0:0.1"`` -> (1.0, 1.1, ..., 2.0); ``"1.5,2.0"`` -> (1.5, 2.0)."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            n = int(round((stop - start) / step))
            values = tuple(round(start + i * step, 6) for i in range(n + 1))
        else:
            values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--extensions {text!r}: expected START:STOP:STEP or a comma list of "
                         f"numbers") from None
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"--extensions {text!r}: extensions must be positive")
    return values
