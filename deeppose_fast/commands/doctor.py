"""``deeppose-fast doctor``: check this host before a long training (versions, GPUs, native operator, GPU
parity, a GPU training step, an allreduce over the GPUs, a GPU benchmark); a table on stdout, ``--json``
for the whole report, exit status 1 when a check failed."""
from __future__ import annotations

import json
from pathlib import Path

import click

from deeppose_fast.doctor import format_report, run_checks


@click.command("doctor")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the whole report as JSON to this file.")
@click.option("--no-bench", is_flag=True, help="Skip the GPU benchmark (about a minute on a GPU host).")
def command(json_path, no_bench):
    """Check this host before a long training: versions of Python, TensorFlow, Keras, DALI, nvImageCodec,
    Horovod (and whether it was built with Gloo, NCCL, MPI), numba and OpenCV; the GPUs TensorFlow and
    DALI see; whether the native operator matches its sources. Where there is a GPU, also: the parity of
    the GPU input pipeline with the CPU one (decoder, warp, crops, normalisation, float16, tf.data), one
    training step on the GPU against the CPU, an allreduce over the local GPUs (Horovod with NCCL, 2 or
    more GPUs) and a short benchmark (crops/s, training images/s with bf16 + XLA, input wait). Without a
    GPU those are skipped, each with the reason.

    Exit status 0 when no check failed (skipped checks do not fail), 1 otherwise.

    \b
    Examples:
      deeppose-fast doctor
      deeppose-fast doctor --no-bench --json doctor-$(hostname).json
    """
    if json_path is not None and not json_path.parent.is_dir():  # say so before the checks run
        raise click.ClickException(f"--json {json_path}: folder {json_path.parent} does not exist")
    report = run_checks(bench=not no_bench)
    click.echo(format_report(report))
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as e:
            raise click.ClickException(f"--json {json_path}: cannot write it ({e.strerror})") from None
        click.echo(f"wrote {json_path}")
    if not report["ok"]:
        raise SystemExit(1)
