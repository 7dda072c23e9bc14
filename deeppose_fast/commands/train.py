"""``deeppose-fast train``: train a preset, every setting overridable (``--batch-size 64 --conv-lr 1e-3``).

    deeppose-fast train --preset synthetic-cpu
    horovodrun -np 4 -H localhost:4 deeppose-fast train --preset mpii-scratch --scale-lr --warmup-steps 500
    deeppose-fast train --preset synthetic-cpu --resume      # continue runs/synthetic-cpu exactly
    deeppose-fast cascade-stats runs/synthetic-cpu           # the cascade: stage 1's errors, then stage 2
    deeppose-fast train --preset synthetic-cpu-stage2        # = --stage 2 --from runs/synthetic-cpu
    # elastic: survives a lost rank, admits new ones (hosts.sh prints "host:slots" lines)
    horovodrun --gloo -np 3 --min-np 2 --max-np 4 --host-discovery-script ./hosts.sh deeppose-fast train --elastic
"""
from __future__ import annotations

import sys

import click

from deeppose_fast import checkpoint, dist
from deeppose_fast.config import PRESETS, SETTINGS, option
from deeppose_fast.datasets import DatasetError
from deeppose_fast.datasets.shards import ShardError
from deeppose_fast.pipeline.contract import PipelineError
from deeppose_fast.pipeline.native import NativeBuildError
from deeppose_fast.train import RankLost, TrainingDiverged, train_command

_TYPES = {int: int, float: float, str: str}
_ALIASES = {"previous": ("--from",)}  # train --stage 2 --from RUN_OF_STAGE_1


def _setting_options(func):
    """One option per training setting (``config.SETTINGS``: the network's and the crop recipe's fields
    included), default None = the preset's value."""
    for s in reversed(list(SETTINGS.values())):
        if s.name == "preset":
            continue
        help_text = f"(default from the preset; base {s.default!r})"
        if s.type is bool:
            func = click.option(f"{option(s.name)}/--no-{s.name.replace('_', '-')}", s.name, default=None,
                                help=help_text)(func)
        else:
            names = (option(s.name),) + _ALIASES.get(s.name, ())
            func = click.option(*names, s.name, type=_TYPES[s.type], default=None, help=help_text)(func)
    return func


@click.command(context_settings={"show_default": False})
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="training recipe (default synthetic-cpu; with --resume, the run's own settings)")
@click.option("--resume", is_flag=True, help="continue from the newest checkpoint in --out")
@_setting_options
def command(preset, resume, **overrides):
    """Train the AlexNet regressor (single process, or one process per GPU under horovodrun).

    Exit status: 0 done, 1 a usage error (one line naming the file or folder), 3 the training diverged
    (the last good checkpoint is kept), 4 another rank of a distributed run was lost (rank 0 names it,
    the newest checkpoint and the resume command), 130 stopped by Ctrl-C / SIGTERM after writing a
    checkpoint (0 under horovodrun, whose launcher reports any non-zero exit as a failure with a
    traceback).
    """
    try:
        result = train_command(preset, resume, overrides)
    except TrainingDiverged as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(3)
    except RankLost as e:
        if e.reporter:  # once per job, from rank 0 when it survived
            click.echo(f"error: {e}", err=True)
        dist.shutdown()
        dist.exit_now(4)  # before horovodrun's SIGKILL; the checkpoints are on disk
    except (ValueError, FileNotFoundError, checkpoint.CheckpointError, DatasetError, ShardError, PipelineError,
            NativeBuildError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        dist.shutdown()
    if result["stopped_by"] == "signal":  # a clean, resumable stop (train printed where and how to resume)
        if dist.launched_by_horovodrun():
            dist.exit_now(0)  # before horovodrun's SIGKILL, 5 s after its SIGTERM; logs and checkpoint are closed
        sys.exit(130)
