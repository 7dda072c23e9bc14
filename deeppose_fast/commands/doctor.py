"""``deeppose-fast doctor``: check this host before a long training (versions, GPUs, native operator,
GPU parity); a table on stdout, ``--json`` for the whole report, exit status 1 when a check failed."""
from __future__ import annotations

import json
from pathlib import Path

import click

from deeppose_fast.doctor import format_report, run_checks


@click.command("doctor")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the whole report as JSON to this file.")
def command(json_path):
    """Check this host before a long training: versions of Python, TensorFlow, Keras, DALI, nvImageCodec,
    Horovod (and whether it was built with Gloo, NCCL, MPI), numba and OpenCV; the GPUs TensorFlow and
    DALI see; whether the native operator matches its sources; and, where DALI sees a GPU, the parity of
    the GPU input pipeline with the CPU one (skipped, with the reason, without a GPU).

    Exit status 0 when no check failed (skipped checks do not fail), 1 otherwise.

    \b
    Examples:
      deeppose-fast doctor
      deeppose-fast doctor --json doctor-$(hostname).json
    """
    if json_path is not None and not json_path.parent.is_dir():  # say so before the checks run
        raise click.ClickException(f"--json {json_path}: folder {json_path.parent} does not exist")
    report = run_checks()
    click.echo(format_report(report))
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as e:
            raise click.ClickException(f"--json {json_path}: cannot write it ({e.strerror})") from None
        click.echo(f"wrote {json_path}")
    if not report["ok"]:
        raise SystemExit(1)
