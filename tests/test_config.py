"""Training presets reproduce the reference scripts; overrides and validation."""
from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from deeppose_fast import config
from deeppose_fast.commands.train import command
from deeppose_fast.specs import AugmentSpec, ModelSpec


def test_reference_presets_match_dtf_scripts():
    # DTF: Adagrad 0.0005 for conv and fc apart, accumulator 1e-4, batch 128, dropout 0.6, 227 px
    for name in ("lsp-ext-imagenet", "lsp-ext-scratch", "lsp", "mpii-imagenet", "mpii-scratch"):
        cfg = config.preset(name)
        assert (cfg.optimizer, cfg.conv_lr, cfg.fc_lr, cfg.initial_accumulator) == ("adagrad", 0.0005, 0.0005, 1e-4)
        net, crop = cfg.model, cfg.augment
        assert (cfg.batch_size, net.dropout, net.input_size, net.width, net.fc_units) == (128, 0.6, 227, 1.0, 4096)
        assert (net.init, net.norm, crop.shift, crop.flip, crop.rotation) == ("dtf", "lrn", 0.1, True, 0.0)
        imagenet = name.endswith("imagenet")
        assert cfg.fix_conv_steps == (10000 if imagenet else 0)
        assert bool(cfg.weights) == imagenet
    assert config.preset("lsp-ext-imagenet").augment.ext_range == (1.2, 2.0)
    assert (config.preset("lsp-ext-scratch").augment.ext_min, config.preset("lsp").augment.ext_min) == (1.5, 1.5)
    assert config.preset("mpii-scratch").augment.ext_range == (1.0, 1.2)
    assert config.preset("mpii-imagenet").test_extension == 1.2


def test_overrides_and_round_trip():
    cfg = config.preset("synthetic-cpu", batch_size=8, conv_lr=0.01, flip=False, out=None)
    assert (cfg.batch_size, cfg.conv_lr, cfg.augment.flip) == (8, 0.01, False)
    assert cfg.out == config.PRESETS["synthetic-cpu"]["out"]  # None = keep the preset's value
    again = config.TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"optimizer": "rmsprop"}, "optimizer"), ({"batch_size": 0}, "batch_size"),
    ({"ext_min": 2.5}, "ext_min"), ({"mixed_precision": "fp8"}, "mixed_precision"),
    ({"dropout": 1.5}, "dropout"), ({"norm": "group"}, "norm"),
    ({"joint_input": True}, "needs --stage 2"),
    ({"joint_input": True, "stage": 2, "previous": "runs/lsp", "joint_weights": "all"}, "--joint-weights own")])
def test_invalid_settings(overrides, match):
    with pytest.raises(ValueError, match=match):
        config.preset("lsp", **overrides)


def test_unknown_setting_and_preset():
    with pytest.raises(ValueError, match="unknown training settings"):
        config.preset("lsp", learning_rate=1.0)
    with pytest.raises(ValueError, match="unknown preset"):
        config.preset("coco")


def test_every_setting_is_a_command_line_option():
    help_text = CliRunner().invoke(command, ["--help"]).output
    for name in config.SETTINGS:  # the network's and the crop recipe's fields included
        if name != "preset":
            assert "--" + name.replace("_", "-") in help_text, name
    assert "--preset" in help_text and "--resume" in help_text


@pytest.mark.parametrize("name", [s.name for s in config.SETTINGS.values() if s.type is float])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_float_settings_are_refused(name, value):
    # inf slipped through every range check: --conv-lr inf trained to an all-NaN checkpoint, exit 0
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        config.preset("lsp", **{name: value})


def test_the_specs_are_carried_whole_and_set_by_flat_name():
    cfg = config.preset("synthetic-cpu", width=0.25, rotation=15.0, eval_extension=0.0)
    assert cfg.model == ModelSpec(input_size=113, width=0.25, fc_units=1024, dropout=0.0, init="he",
                                  norm="batchnorm", pool5=False)
    assert cfg.augment == AugmentSpec(ext_min=1.0, ext_max=1.2, rotation=15.0)
    flat = cfg.to_dict()
    assert flat["width"] == 0.25 and flat["rotation"] == 15.0 and "model" not in flat and "augment" not in flat
    # every field of both specs is a setting (a command-line option, a key of config.json)
    for spec in (ModelSpec, AugmentSpec):
        for f in dataclasses.fields(spec):
            assert config.SETTINGS[f.name].type is not None and f.name in flat


def test_the_test_extension_default_is_the_recipe_s():
    assert config.preset("synthetic-cpu").test_extension == AugmentSpec(1.0, 1.2).test_extension == 1.2
    assert config.preset("synthetic-cpu", eval_extension=1.5).test_extension == 1.5
    with pytest.raises(ValueError, match="eval_extension"):
        config.preset("lsp", eval_extension=-1.0)
