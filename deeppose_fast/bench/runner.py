"""``deeppose-fast bench``: run the stages, side by side in one run, and assemble the table and JSON record.

Stages (``stages.STAGES``; each job in its own process, see ``core``):

| stage | measures | module |
|---|---|---|
| ``pipeline`` | crops/s, CPU s per crop, peak RSS: DALI (CPU, GPU), OpenCV reference, RAM cache | ``pipeline`` |
| ``train-step`` | images/s of the training step on synthetic tensors (fp32; GPU: bf16, XLA) | ``train_step`` |
| ``end-to-end`` | images/s of training fed by the real pipeline, fraction of time waiting for input | ``end_to_end`` |
| ``metrics`` | Numba kernels vs NumPy reference; first call (compile time) apart | ``metrics`` |
| ``horovod`` | images/s per rank under horovodrun at 1..N ranks, weak-scaling efficiency | ``horovod`` |
| ``cascade`` | joint crops beside person crops (crops/s, CPU s); people/s of stage 1 and of stages 1+2 | ``cascade`` |

Every rate is the median of several timed repeats after a warm-up, with its spread (half the range
relative to the median). The JSON record holds the hardware, versions, settings, the exact command and
every raw value; a failed stage is recorded with its error and the other stages still run.
"""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from deeppose_fast import config
from deeppose_fast.bench import core
from deeppose_fast.bench.stages import NAMES, TITLES, load as load_stage
from deeppose_fast.datasets import DatasetWarning, shards
from deeppose_fast.datasets.prepare import prepare


@dataclass
class Settings:
    """Everything a run depends on; ``None`` fields take the mode's default (``resolve``)."""

    stages: tuple[str, ...] = NAMES
    quick: bool = False
    data: str | None = None  # a prepared shard folder; None: a synthetic set prepared into cache_dir
    cache_dir: str | None = None
    preset: str | None = None  # the network (and default batch, input size) of this config preset
    batch_size: int | None = None
    input_size: int | None = None
    repeats: int | None = None  # timed repeats per process
    rounds: int | None = None  # interleaved rounds (a fresh process per job each)
    seconds: float | None = None  # minimum duration of one timed repeat
    warmup: int | None = None
    batches: int | None = None  # pipeline batches per repeat (training stages: a third, at least 2)
    threads: int | None = None  # input pipeline threads
    loaders: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    ranks: tuple[int, ...] = (1, 2)
    horovod_input: str = "synthetic"
    metrics_sizes: tuple[int, ...] | None = None
    synthetic_images: int | None = None
    timeout: float = 900.0  # seconds, per worker process

    def resolve(self) -> "Settings":
        """A copy with every ``None`` replaced by the default of the mode (quick or full) and machine."""
        bad = sorted(set(self.stages) - set(NAMES))
        if bad or not self.stages:
            raise ValueError(f"unknown stages {bad}; expected some of {', '.join(NAMES)}")
        gpu = bool(core.gpu_names())
        q = self.quick
        preset = self.preset or ("synthetic-cpu" if q or not gpu else "mpii-scratch")
        base = config.preset(preset)
        defaults = dict(
            preset=preset, batch_size=base.batch_size, input_size=base.model.input_size,
            repeats=2 if q else 3, rounds=1 if q else 2, seconds=0.0 if q else 2.0, warmup=1 if q else 3,
            batches=3 if q else 20, threads=min(4, core.usable_cpus()) if not gpu else 8,
            sources=("dali",) if q else ("dali", "reference"),
            metrics_sizes=(2_000, 20_000) if q else (2_000, 100_000, 1_000_000),
            synthetic_images=60 if q else 400,
            cache_dir=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deeppose-fast"
                          / "bench"))
        resolved = {k: (v if getattr(self, k) is None else getattr(self, k)) for k, v in defaults.items()}
        return dataclasses.replace(self, **resolved)

    @property
    def train_batches(self) -> int:
        return max(2, self.batches // 3)


def prepared_data(s: Settings) -> tuple[Path, dict]:
    """The shard folder to measure (``s.data``, or a synthetic set prepared once into the cache) and a
    summary of its manifest."""
    if s.data:
        path = Path(s.data).expanduser().resolve()
    else:
        path = Path(s.cache_dir) / f"synthetic-{s.synthetic_images}"
        if not (path / shards.MANIFEST).is_file():  # the manifest is written last: its absence = incomplete
            with warnings.catch_warnings():  # the generator's people without joints are skipped, with a warning
                warnings.simplefilter("ignore", DatasetWarning)
                prepare("synthetic", path, num_images=s.synthetic_images, workers=2, progress=False)
    try:
        m = shards.Manifest.read(path)
    except shards.ShardError as e:
        raise ValueError(f"--data {path}: not a prepared data set ({e}); make one with `deeppose-fast prepare`")
    return path, {"path": str(path), "name": m.name, "num_joints": int(m.num_joints),
                  "train_people": m.count("train"), "train_shards": len(m.shard_names("train"))}


def run(settings: Settings, *, command: str = "", log=print) -> dict:
    """Run the selected stages and return the record (see the module docstring)."""
    s = settings.resolve()
    t0 = time.time()
    data, summary = prepared_data(s)
    record = {"benchmark": "deeppose-fast bench", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "command": command, "system": core.system_info(),
              "settings": dataclasses.asdict(s),
              "data": summary, "stages": {}, "errors": {}}
    for name in s.stages:
        log(f"[bench] {TITLES[name]} ...")
        t = time.time()
        try:
            record["stages"][name] = load_stage(name).measure(s, data, summary["num_joints"])
            record["stages"][name]["wall_s"] = round(time.time() - t, 1)
        except (RuntimeError, ValueError, OSError) as e:
            record["errors"][name] = str(e)
            log(f"[bench] {name} failed: {e}")
    record["wall_s"] = round(time.time() - t0, 1)
    record["system"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return record


def markdown(record: dict) -> str:
    """The record as a readable Markdown report: header, then one table per stage."""
    sysi, d = record["system"], record["data"]
    versions = ", ".join(f"{k} {v}" for k, v in sysi["versions"].items())
    lines = [f"# deeppose-fast bench, {record['date']}", "",
             f"- command: `{record['command']}`" if record["command"] else None,
             f"- machine: {sysi['cpu']}, {sysi['cpus_usable']} usable CPUs, {sysi['memory_gib']} GiB; "
             f"GPUs: {', '.join(sysi['gpus']) or 'none'}; load average {sysi['load_average']} at the start, "
             f"{sysi.get('load_average_end')} at the end",
             f"- software: Python {sysi['python']}, {versions}",
             f"- data: {d['path']} ({d['name']}, {d['train_people']} train people, {d['num_joints']} joints)",
             f"- wall time {record['wall_s']} s", ""]
    for name in NAMES:
        if name in record["stages"]:
            lines += [f"## {TITLES[name]}", "", load_stage(name).markdown(record["stages"][name])]
        elif name in record["errors"]:
            lines += [f"## {TITLES[name]}", "", "FAILED:", "", "```", record["errors"][name], "```", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def write(record: dict, json_path=None, markdown_path=None) -> str:
    """Write the record as JSON and/or Markdown; return the Markdown."""
    text = markdown(record)
    core.write_outputs(record, text, json_path, markdown_path)
    return text


def bench(settings: Settings, *, command: str = "", json_path=None, markdown_path=None, log=print
          ) -> tuple[dict, str]:
    """What ``deeppose-fast bench`` does: ``run``, then ``write``. Returns the record and its Markdown."""
    record = run(settings, command=command, log=log)
    return record, write(record, json_path, markdown_path)
