"""Every `deeppose-fast bench ...` command the documentation gives (README.md, benchmarks/README.md, the
recorded results and the Makefile) parses with today's options: the benchmarks are run by that command
alone, not by scripts with their own options."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

from deeppose_fast.commands.bench import command

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "Makefile",
        *sorted((REPO / "benchmarks" / "results").glob("*.md"))]
_INLINE = re.compile(r"`(deeppose-fast bench[^`]*)`")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) of each `deeppose-fast bench` command: code lines (a trailing backslash
    continues a line; a `#` comment ends it), inline code spans, and the JSON records' ``command``."""
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        i = 0
        while i < len(lines):
            line, where = lines[i].strip(), f"{doc.relative_to(REPO)}:{i + 1}"
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            text = re.sub(r"^\$\(BIN\)/", "", line.split("  #")[0].strip())
            if text.startswith("deeppose-fast bench"):
                found.append((where, text))
            found += [(where, m) for m in _INLINE.findall(line) if not text.startswith(m)]
            i += 1
    for record in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        found.append((str(record.relative_to(REPO)), json.loads(record.read_text())["command"]))
    return found


COMMANDS = documented_commands()


def test_the_documentation_gives_the_benchmark_commands():
    assert len(COMMANDS) >= 10, COMMANDS
    assert not any("benchmarks/bench_" in cmd for _, cmd in COMMANDS)


@pytest.mark.parametrize("where, line", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_bench_command_parses(where, line, tmp_path, monkeypatch):
    args = shlex.split(line)[2:]
    monkeypatch.chdir(tmp_path)
    for flag, value in zip(args, args[1:]):
        if flag == "--data":  # must exist: an empty stand-in for the prepared folder it names
            (tmp_path / value).mkdir(parents=True, exist_ok=True)
    try:
        with command.make_context("bench", args) as ctx:
            assert ctx.params["stages"], where
    except click.ClickException as e:
        pytest.fail(f"{where}: `{line}` does not parse: {e.format_message()}")
