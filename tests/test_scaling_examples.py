"""The README's "Scaling out" examples are well-formed: the Kubernetes manifest parses and has the shape
the MPI Operator expects, and every ``horovodrun ... deeppose-fast train ...`` command in them (shell
scripts and the manifest's launcher) uses only options that horovodrun and ``deeppose-fast train`` accept.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import click
import pytest
import yaml
from horovod.runner import launch

from deeppose_fast.commands.train import command as train_command

README = Path(__file__).resolve().parents[1] / "README.md"


def scaling_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block in the README's "Scaling out" section."""
    text = README.read_text()
    start = text.index("## Scaling out")
    section = text[start:text.index("\n## ", start + 1)]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def commands_in(script: str) -> list[list[str]]:
    """The argument lists of the ``horovodrun`` lines of a shell script (continuations joined; ``$VAR`` and
    ``"$VAR"`` stand for a value)."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        words = shlex.split(line.strip(), comments=True)
        if "horovodrun" in words:
            words = words[words.index("horovodrun"):]
            found.append(["1" if w.startswith("$") else w for w in words])  # a value any option takes
    return found


def check_command(words: list[str], monkeypatch) -> None:
    """Parse a ``horovodrun ... deeppose-fast train ...`` command with both real parsers."""
    assert words[0] == "horovodrun" and "deeppose-fast" in words, words
    cut = words.index("deeppose-fast")
    monkeypatch.setattr(sys, "argv", words[:cut] + ["true"])
    launch.parse_args()  # argparse exits on an unknown option
    assert words[cut + 1] == "train", words
    try:
        train_command.make_context("train", words[cut + 2:])
    except click.UsageError as e:
        pytest.fail(f"{' '.join(words)}: {e}")


def test_the_section_has_a_hostfile_slurm_and_kubernetes_example():
    langs = [lang for lang, _ in scaling_blocks()]
    assert langs.count("bash") == 2 and langs.count("yaml") == 1 and langs.count("text") == 1


def test_every_shell_command_parses(monkeypatch):
    scripts = [text for lang, text in scaling_blocks() if lang == "bash"]
    commands = [c for s in scripts for c in commands_in(s)]
    assert len(commands) == 3  # the hostfile run, Slurm's resume and first run
    for words in commands:
        check_command(words, monkeypatch)
    slurm = scripts[1]
    assert slurm.startswith("#!/bin/bash") and "#SBATCH --signal=B:TERM@" in slurm
    assert "--resume" in slurm


def test_the_mpijob_manifest_parses_and_its_launcher_command_does(monkeypatch):
    (manifest,) = [yaml.safe_load(text) for lang, text in scaling_blocks() if lang == "yaml"]
    assert manifest["apiVersion"].startswith("kubeflow.org/") and manifest["kind"] == "MPIJob"
    replicas = manifest["spec"]["mpiReplicaSpecs"]
    (launcher,) = replicas["Launcher"]["template"]["spec"]["containers"]
    workers = replicas["Worker"]
    gpus = workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == manifest["spec"]["slotsPerWorker"]
    words = launcher["command"] + launcher["args"]
    assert int(words[words.index("-np") + 1]) == workers["replicas"] * manifest["spec"]["slotsPerWorker"]
    check_command(words, monkeypatch)
    mounts = {m["name"] for m in workers["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts <= {v["name"] for v in workers["template"]["spec"]["volumes"]}
