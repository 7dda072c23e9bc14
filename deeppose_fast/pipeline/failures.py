"""What went wrong when DALI failed on a prepared folder, in one line: the shard missing or truncated since
the pipeline started, or the record whose JPEG does not decode, with the command that rebuilds the data.

DALI's own errors name an operator and a C++ context; ``reading_error`` turns one into a
``PipelineError`` naming the folder, the split and, where it can find it, the shard or record at fault.
"""
from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

from deeppose_fast.datasets import shards
from deeppose_fast.pipeline.contract import PipelineError, SplitInfo


def dali_reason(error: Exception) -> str:
    """The useful part of a DALI error: which operator failed and why (no traceback, no repeats)."""
    text = " ".join(str(error).split())
    op = re.search(r"Error in \w+ operator `(?:nvidia\.dali\.fn\.)?([^`]+)`", text)
    why = re.search(r"encountered:(.*?)(?:C\+\+ context:|Current pipeline object|$)", text)
    if op and why:
        return f"{op.group(1)}: {why.group(1).strip()}"
    return text[:1000]


@functools.cache
def _cpu_decoder():
    """nvImageCodec's CPU decoder: the library DALI's decoders use (a dependency of the nvidia-dali wheel),
    so it rejects what they reject. OpenCV would not do: libjpeg accepts JPEGs with stray bytes between
    segments that nvImageCodec's parser refuses."""
    from nvidia import nvimgcodec  # late: only after a failure

    return nvimgcodec.Decoder(device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=1,
                              backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])


def undecodable(jpegs: list[bytes]) -> list[bool]:
    """Which of ``jpegs`` DALI's decoders cannot decode."""
    from nvidia import nvimgcodec  # late: only after a failure

    return [image is None for image in _cpu_decoder().decode([nvimgcodec.CodeStream(j) for j in jpegs])]


def find_bad_jpeg(info: SplitInfo, chunk: int = 64) -> str | None:
    """The first record of a split whose JPEG does not decode, as ``record KEY in SHARD.tar`` (a full
    scan, ``chunk`` records at a time: only after a failure)."""
    for tar in info.tars:
        records = shards.iter_shard(tar)
        while part := list(itertools.islice(records, chunk)):
            for rec, bad in zip(part, undecodable([r.jpeg for r in part])):
                if bad:
                    return f"record {rec.key:08d} in {Path(tar).name}: its JPEG does not decode"
    return None


def reading_error(error: Exception, info: SplitInfo, action: str = "reading") -> PipelineError:
    """One line for DALI's failure on ``info``'s split: a shard missing or truncated since the pipeline
    started (``shards.check_shard``'s message), or the folder, the record whose JPEG does not decode
    (when an image operator failed), DALI's reason and what rebuilds the data."""
    reason = dali_reason(error)
    try:
        for tar in info.tars:
            shards.check_shard(tar, hint=info.rebuild_hint)
        record = find_bad_jpeg(info) if re.search(r"image|decoders", reason.split(":")[0]) else None
    except shards.ShardError as e:
        return PipelineError(str(e))
    where = f"{info.shard_dir}: {action} split {info.split!r} failed"
    if record is None:
        return PipelineError(f"{where}: {reason}; if the shards are damaged, {info.rebuild_hint}")
    return PipelineError(f"{where}: {record} ({reason}); {info.rebuild_hint}")
