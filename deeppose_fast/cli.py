"""The ``deeppose-fast`` command line. Thin: each sub-command lives in ``deeppose_fast.commands.<name>``
and is imported only when it runs, so ``--help`` stays fast (TensorFlow and DALI load lazily)."""
from __future__ import annotations

import importlib
import os

import click

from deeppose_fast import __version__

# TensorFlow's C++ INFO lines (CPU feature notes) drown the command's own output; warnings stay. Set at
# import: click imports the sub-command's module (which may load TensorFlow) before the group's callback.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# sub-command -> (module, one-line help shown by --help without importing the module)
COMMANDS = {
    "prepare": ("deeppose_fast.commands.prepare", "Prepare a data set: parse, split, pack into shards."),
    "synthetic": ("deeppose_fast.commands.synthetic", "Write the synthetic data set in an official file format."),
    "train": ("deeppose_fast.commands.train", "Train the AlexNet regressor (presets; Horovod under horovodrun)."),
    "eval": ("deeppose_fast.commands.eval", "Evaluate a checkpoint over a sweep of box extensions."),
    "cascade-stats": ("deeppose_fast.commands.cascade_stats", "Fit stage 2's displacement statistics on a stage-1 run's training errors."),
    "predict": ("deeppose_fast.commands.predict", "Predict joints on images: JSON and a PNG with the skeleton."),
    "export": ("deeppose_fast.commands.export", "Export a checkpoint to a SavedModel that serves alone."),
    "show": ("deeppose_fast.commands.show", "Write a contact sheet of augmented training crops with skeletons."),
    "bench": ("deeppose_fast.commands.bench", "Measure where the time goes: pipeline, step, end to end, metrics, Horovod."),
    "doctor": ("deeppose_fast.commands.doctor", "Check this host before a long training: versions, GPUs, native build, GPU parity."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deeppose-fast")
def main():
    """DeepPose stage 1, fast: data preparation, training, evaluation, prediction and benchmarks."""


if __name__ == "__main__":
    main()
