"""Run folders with a known network, for the command tests: ``save_initial_run`` writes what ``train``
leaves behind (``RUN/checkpoints/ckpt-N`` with the meta the commands read), holding a freshly initialised
network of a given spec."""
from __future__ import annotations

import os
from pathlib import Path

import keras

from deeppose_fast import checkpoint
from deeppose_fast import model as model_lib
from deeppose_fast.specs import ModelSpec


def save_initial_run(run_dir: str | os.PathLike, spec: ModelSpec, *, step: int, config: dict,
                     num_joints: int = 14, skeleton: str = "lsp", seed: int = 0) -> Path:
    """Write one checkpoint at ``step`` into ``run_dir/checkpoints``: the network of ``spec`` for
    ``num_joints`` joints, initialised after ``keras.utils.set_random_seed(seed)``, with ``config`` (the
    training settings by flat name the run records, e.g. ``data``). Returns the checkpoint's path."""
    keras.utils.set_random_seed(seed)
    net = model_lib.build(spec, num_joints)
    meta = {"num_joints": num_joints, "skeleton": skeleton, "model": spec.to_dict(), "config": config}
    return checkpoint.save(Path(run_dir) / "checkpoints", step, {"model": net.variables}, meta)
