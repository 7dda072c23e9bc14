"""``deeppose-fast cascade-stats RUN``: fit stage s+1's displacement statistics on a stage-s run's errors
on the training split (``cascade.stage_stats.fit_run``)."""
from __future__ import annotations

import click

from deeppose_fast import scoring
from deeppose_fast.cascade import statistics, stage_stats
from deeppose_fast.datasets.shards import ShardError
from deeppose_fast.pipeline.contract import PipelineError
from deeppose_fast.pipeline.native import NativeBuildError


@click.command()
@click.argument("run", type=click.Path())
@click.option("--data", default=None, help="prepared data set folder (default: the one the run was trained on)")
@click.option("--extension", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="evaluation crop's box extension (default: the run's test extension)")
@click.option("--out", default=None, help=f"statistics file (default: RUN/{statistics.default_file('S+1')}, S the run's stage)")
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1))
def command(run, data, extension, out, batch_size):
    """Fit the law of a stage's displacements (per joint mean and covariance, in torso diameters) that the
    next stage is trained on: RUN's newest checkpoint (or a checkpoint folder) and the cascade below it
    over the training split (stage 1 on its evaluation crops). Prints a per-joint table and writes the
    statistics as JSON."""
    try:
        stage_stats.fit_run(run, data, extension=extension, out=out, batch_size=batch_size, echo=click.echo,
                            note=lambda text: click.echo(text, err=True))
    except scoring.OutputNotWritable as e:
        raise click.ClickException(f"{e}; pass --out FILE to write the statistics elsewhere") from None
    except (ValueError, FileNotFoundError, ShardError, PipelineError, NativeBuildError) as e:
        # user-fixable data and checkpoint problems: each message names the path
        raise click.ClickException(str(e)) from None
