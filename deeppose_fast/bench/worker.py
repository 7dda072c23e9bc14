"""Worker entry: ``python -m deeppose_fast.bench.worker STAGE JSON`` measures one job of one stage (a name
of ``stages.STAGES``) in this process and prints ``BENCH_RESULT {json}`` (see ``core``). Under horovodrun
only rank 0 prints."""
from __future__ import annotations

import json
import os
import sys

from deeppose_fast.bench import core, stages


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in stages.STAGES:
        print(f"usage: python -m deeppose_fast.bench.worker {{{','.join(stages.STAGES)}}} JSON", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = stages.load(argv[0]).worker(json.loads(argv[1]))
    if result is not None:
        core.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
