"""Benchmark: ``deeppose_fast.metrics.evaluate`` with the Numba kernels against the vectorised NumPy
reference, at several numbers of people, plus the first-call cost in a fresh process (cold compile vs
cached load). A thin wrapper over ``deeppose_fast.bench.metrics`` (stage 4 of ``deeppose-fast bench``),
which documents the method.

    python benchmarks/bench_metrics.py                       # 2k, 100k, 1M people, 5 repeats
    python benchmarks/bench_metrics.py --sizes 2000 --repeats 2 --json out.json --markdown out.md
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from deeppose_fast.bench.core import write_outputs  # noqa: E402
from deeppose_fast.bench.metrics import DEFAULT_SIZES, make_data, markdown, run  # noqa: E402

__all__ = ["make_data", "run", "report", "main"]


def report(result: dict, command: str = "") -> str:
    """The result as a Markdown page: a header with the machine, then the stage's tables."""
    s = result["system"]
    lines = ["# Metrics benchmark: Numba kernels vs NumPy reference", "", f"- date: {result['date']}"]
    if command:
        lines.append(f"- command: `{command}`")
    lines += [f"- CPU: {s['cpu']}, {s['cpus_usable']} cores visible; load average at the end "
              f"{result['environment']['load_average']}",
              "- " + ", ".join(f"{k} {v}" for k, v in s["versions"].items() if k in ("numpy", "numba",
                                                                                     "deeppose-fast")), ""]
    return "\n".join(lines) + "\n" + markdown(result)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="numbers of people")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per size and backend")
    ap.add_argument("--no-first-call", action="store_true", help="skip the fresh-process measurements")
    ap.add_argument("--json", help="write the result as JSON to this file ('-': standard output)")
    ap.add_argument("--markdown", type=Path, help="write the tables as Markdown here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or any(n < 1 for n in args.sizes):
        ap.error("--repeats and --sizes must be >= 1")
    result = run(args.sizes, args.repeats, include_first_call=not args.no_first_call)
    command = shlex.join(["python", "benchmarks/bench_metrics.py", *(sys.argv[1:] if argv is None else argv)])
    text = report(result, command)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        print(text)
    write_outputs(result, text, None if args.json == "-" else args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
