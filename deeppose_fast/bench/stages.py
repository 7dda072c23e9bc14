"""The benchmark stages, one registry: each stage's name (as ``--stages``, the worker command line and the
record spell it), its title and its module.

A stage module provides ``measure(settings, data, num_joints) -> dict`` (run in the runner process: it
starts the stage's worker processes), ``worker(params) -> dict`` (one measured job, in its own process)
and ``markdown(stage) -> str`` (its table). Modules are imported by name when their stage runs (``load``):
a worker process must hold only its own stage's libraries, since its peak RSS is reported (a loader's
must not include TensorFlow), as ``cli.py`` loads a sub-command's module only when it runs.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import NamedTuple


class Stage(NamedTuple):
    title: str
    module: str


STAGES: dict[str, Stage] = {
    "pipeline": Stage("1. Input pipeline", "deeppose_fast.bench.pipeline"),
    "train-step": Stage("2. Training step on synthetic tensors", "deeppose_fast.bench.train_step"),
    "end-to-end": Stage("3. End-to-end training with the real pipeline", "deeppose_fast.bench.end_to_end"),
    "metrics": Stage("4. Metric kernels", "deeppose_fast.bench.metrics"),
    "horovod": Stage("5. Horovod scaling", "deeppose_fast.bench.horovod"),
    "cascade": Stage("6. Cascade: joint crops and inference", "deeppose_fast.bench.cascade"),
}
NAMES = tuple(STAGES)
TITLES = {name: stage.title for name, stage in STAGES.items()}


def load(name: str) -> ModuleType:
    """The module of stage ``name`` (``ValueError`` naming the stages for another name)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return importlib.import_module(STAGES[name].module)
