"""``deeppose-fast bench``: where the training time goes on this machine, side by side in one run
(see ``deeppose_fast.bench.runner``)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from deeppose_fast import config
from deeppose_fast.bench import runner
from deeppose_fast.bench.stages import NAMES as STAGES


def _csv(kind, choices=None):
    """A click callback turning ``a,b,c`` into a tuple of ``kind``, checked against ``choices``."""

    def convert(ctx, param, value):
        if value is None:
            return None
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            valid = f": one or more of {', '.join(choices)} (or 'all')" if choices else ""
            raise click.BadParameter(f"got {value!r}; expected a comma-separated list{valid}")
        if choices is not None:
            if items == ["all"]:
                return tuple(choices)
            bad = [v for v in items if v not in choices]
            if bad:
                raise click.BadParameter(f"{', '.join(bad)} not among {', '.join(choices)}")
        try:
            out = tuple(kind(v) for v in items)
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {kind.__name__} values, got {value!r}") from None
        if kind is int and min(out) < 1:
            raise click.BadParameter(f"expected one or more positive values, got {value!r}")
        return out

    return convert


def _command_line(ctx: click.Context) -> str:
    """The options given on the command line, as a shell command that repeats the run."""
    parts = ["deeppose-fast", "bench"]
    for p in ctx.command.params:
        if ctx.get_parameter_source(p.name) != ParameterSource.COMMANDLINE:
            continue
        raw = ctx.params[p.name]
        flag = p.opts[0]
        if p.is_flag:
            parts.append(flag)
        else:
            parts += [flag, ",".join(map(str, raw)) if isinstance(raw, tuple) else str(raw)]
    return shlex.join(parts)


@click.command("bench")
@click.option("--stages", callback=_csv(str, STAGES), default=",".join(STAGES), show_default=True,
              help="Comma-separated stages to run (or 'all').")
@click.option("--quick", is_flag=True, help="Small sizes, few batches: about a minute on an idle 2-core machine.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A prepared shard folder [default: a synthetic set prepared once into the cache folder].")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the default synthetic set is prepared [default: ~/.cache/deeppose-fast/bench].")
@click.option("--preset", default=None,
              help="Training preset whose network, batch and input size are measured [default: synthetic-cpu "
                   "on CPU or with --quick, mpii-scratch (full AlexNet) on a GPU].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Batch (per rank) [default: the preset's].")
@click.option("--input-size", type=click.IntRange(min=16), default=None,
              help="Crop side S [default: the preset's].")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Timed repeats per process [quick 2, else 3].")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Interleaved rounds, a fresh process per job each [quick 1, else 2].")
@click.option("--seconds", type=click.FloatRange(min=0.0), default=None,
              help="Minimum duration of one timed repeat [quick 0, else 2].")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Untimed batches first [quick 1, else 3].")
@click.option("--batches", type=click.IntRange(min=1), default=None,
              help="Pipeline batches per repeat; training stages run a third of it, at least 2 [quick 3, else 20].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Input pipeline threads.")
@click.option("--loaders", callback=_csv(str, ("dali-cpu", "dali-gpu", "dali-cpu-region", "dali-cpu-whole", "reference", "ram-cache")), default=None,
              help="Pipeline loaders [default: dali-cpu, reference, ram-cache, and dali-gpu on a GPU].")
@click.option("--variants", callback=_csv(str, ("fp32", "bf16", "xla", "bf16+xla")), default=None,
              help="Training-step variants [default: fp32 on CPU, all on a GPU].")
@click.option("--sources", callback=_csv(str, ("dali", "reference")), default=None,
              help="End-to-end input sources [quick: dali; else dali,reference].")
@click.option("--ranks", callback=_csv(int), default="1,2", show_default=True,
              help="Horovod rank counts (weak scaling; efficiency against the first).")
@click.option("--horovod-input", type=click.Choice(["synthetic", "dali"]), default="synthetic", show_default=True,
              help="What the ranks train on: synthetic tensors (network + allreduce) or the DALI pipeline.")
@click.option("--metrics-sizes", callback=_csv(int), default=None,
              help="Numbers of people for the metric kernels [quick 2000,20000; else 2000,100000,1000000].")
@click.option("--synthetic-images", type=click.IntRange(min=10), default=None,
              help="Size of the default synthetic set [quick 60, else 400 images].")
@click.option("--timeout", type=click.FloatRange(min=1.0), default=900.0, show_default=True,
              help="Seconds allowed to one worker process.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON record here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the Markdown report here.")
@click.pass_context
def command(ctx, stages, quick, data, cache_dir, preset, batch_size, input_size, repeats, rounds, seconds,
            warmup, batches, threads, loaders, variants, sources, ranks, horovod_input, metrics_sizes,
            synthetic_images, timeout, json_path, markdown_path):
    """Measure where the time goes: input pipeline, training step, end-to-end training, metric kernels and
    Horovod scaling, each in its own process, with warm-up excluded and median and spread of several
    repeats. Prints a table; --json writes the full record (hardware, versions, settings, command)."""
    if preset is not None and preset not in config.PRESETS:
        raise click.BadParameter(f"unknown preset {preset!r}; expected one of {', '.join(sorted(config.PRESETS))}",
                                 param_hint="--preset")
    settings = runner.Settings(
        stages=stages, quick=quick, data=str(data) if data else None, cache_dir=str(cache_dir) if cache_dir else None,
        preset=preset, batch_size=batch_size, input_size=input_size, repeats=repeats, rounds=rounds,
        seconds=seconds, warmup=warmup, batches=batches, threads=threads, loaders=loaders, variants=variants,
        sources=sources, ranks=ranks, horovod_input=horovod_input, metrics_sizes=metrics_sizes,
        synthetic_images=synthetic_images, timeout=timeout)
    try:
        record, text = runner.bench(settings, command=_command_line(ctx), json_path=json_path,
                                    markdown_path=markdown_path, log=lambda msg: click.echo(msg, err=True))
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(text)
    if record["errors"]:
        click.echo(f"failed stages: {', '.join(record['errors'])}", err=True)
        sys.exit(1)
