"""Training settings (``TrainConfig``) and the presets that reproduce the reference's training scripts.

Presets (DTF = asanakoy/deeppose_tf, whose scripts these reproduce):

| preset | data | init | crop extension | notes |
|---|---|---|---|---|
| ``lsp-ext-imagenet`` | LSP + LSP-extended (11000) | ImageNet | 1.2-2.0 | fc layers alone for 10000 steps |
| ``lsp-ext-scratch`` | LSP + LSP-extended | random | 1.5-2.0 | |
| ``lsp`` | LSP 1..1000 | random | 1.5-2.0 | the small "LSP only" recipe |
| ``mpii-imagenet`` | MPII (DTF split) | ImageNet | 1.0-1.2 | fc layers alone for 10000 steps |
| ``mpii-scratch`` | MPII | random | 1.0-1.2 | |
| ``synthetic-cpu`` | ./data/synthetic | random | 1.0-1.2 | reduced network, Adam, L1: see below |

Cascade presets ``NAME-stage2`` and ``NAME-stage3`` (of the four reference presets and ``synthetic-cpu``):
the stage-1 preset's network, optimiser and flips, ``stage`` 2 or 3, ``previous`` = the run of the stage
before, ``sigma`` 0.6 and a joint-conditioned network (``joint_input``, told the joint it refines; chosen
on the synthetic set against the paper's output pair per joint, README, "The cascade"), from the previous
stage's weights (``init_previous``: conv1-fc7 of stage 1), 100k steps (synthetic: 1500 steps, at most 9.5
minutes).

All reference presets: AlexNet 227 px, batch 128, Adagrad lr 0.0005 for the conv and fc variables apart
(initial accumulator 1e-4), dropout 0.6, shift 0.1, flips, evaluation every 250 steps.

``synthetic-cpu`` is a smoke preset that must learn on a 2-core CPU in minutes. It deviates from the
reference on purpose, and only there (each measured on the synthetic set, see the project's report):
- a reduced AlexNet: same layer sequence at 113 px, half the conv channels, fc6/fc7 of 1024, no pool5 (so
  fc6 sees a 6 x 6 grid, as the reference's fc6 does at 227 px), batch normalisation in place of LRN and
  after conv3-5, He initialisation, no dropout;
- L1 loss (same normalisation as DTF's), Adam lr 2e-3 with cosine decay, batch 16 (Adagrad at 5e-4
  needs 100k+ steps);
- MPII's crop extension 1.0-1.2 (the synthetic set is in MPII's format), so the test crop is 1.2.
Command and cost: ``deeppose-fast train --preset synthetic-cpu``: 3000 steps, stopped at 9.5 minutes at
the latest (a checkpoint is written either way).

Settings by name. The network (``TrainConfig.model``, a ``ModelSpec``) and the crop recipe
(``TrainConfig.augment``, an ``AugmentSpec``) are carried whole, but every setting has one flat name
(``width``, ``rotation``, ``batch_size``): the name of its command-line option (``--width``), of its key in
a preset, in ``replace(...)`` and in ``to_dict()`` (``config.json`` and a checkpoint's ``config``).
``SETTINGS`` lists them all; a field added to a spec is a setting everywhere without another edit.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from deeppose_fast.specs import AugmentSpec, ModelSpec

# TrainConfig fields holding a spec, and the spec's class: their fields are settings by their own names.
SPECS: dict[str, type] = {"model": ModelSpec, "augment": AugmentSpec}


@dataclass
class TrainConfig:
    """Every training setting; each one can be overridden on the command line (``--batch-size 64``).

    ``model`` and ``augment`` are whole specs; their fields are set by flat name (see the module
    docstring). Learning rates are per rank before scaling: with ``scale_lr`` the rate is multiplied by
    the number of ranks, reached linearly over ``warmup_steps``.
    """

    preset: str = "custom"
    data: str = "data/synthetic"  # prepared shard folder (manifest.json + tar shards)
    out: str = "runs/custom"  # checkpoints, logs, TensorBoard summaries
    weights: str = ""  # ImageNet initialisation: bvlc_alexnet.tf (TF1 checkpoint) or bvlc_alexnet.npy
    model: ModelSpec = field(default_factory=ModelSpec)  # the network
    # optimisation
    batch_size: int = 128  # per rank
    loss: str = "l2"  # l2 (DTF) | l1 (sum of absolute errors, same normalisation)
    optimizer: str = "adagrad"  # adagrad | adam | momentum
    conv_lr: float = 0.0005
    fc_lr: float = 0.0005
    initial_accumulator: float = 1e-4
    fix_conv_steps: int = 0  # train the fc layers alone for the first N steps (DTF's fix_conv_iter)
    max_steps: int = 400000
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much wall time; 0 = no limit
    lr_schedule: str = "constant"  # constant (DTF) | cosine (decay to 0 at max_steps)
    scale_lr: bool = False  # multiply the learning rates by the number of ranks
    warmup_steps: int = 0  # linear warm-up to the scaled rate
    seed: int = 1701
    augment: AugmentSpec = field(default_factory=AugmentSpec)  # the training crop (DTF recipe)
    # the cascade (Toshev & Szegedy 2014, section 3.2): stage s >= 2 refines each joint from a crop about it
    stage: int = 1  # 1: the whole-person network; s >= 2: a refinement stage
    previous: str = ""  # stage s >= 2: the run (its newest checkpoint) or checkpoint of stage s - 1
    sigma: float = 1.0  # stage s >= 2: the joint crop's side in torso diameters of the current estimate
    stats: str = ""  # stage s >= 2: the displacement statistics; "" = PREVIOUS_RUN/cascade-stats-stage{s}.json
    joint_weights: str = "own"  # stage s >= 2: train pair i on joint i's crops only (own), or on every joint in a crop (all)
    init_previous: bool = True  # stage s >= 2: start from stage s - 1's weights (same network), else from scratch
    # evaluation during training
    eval_every: int = 250
    eval_batch_size: int = 128
    eval_extension: float = 0.0  # test crop extension; 0 = augment.test_extension
    eval_limit: int = 0  # evaluate on the first N test people only; 0 = all
    # bookkeeping
    log_every: int = 20
    ckpt_every: int = 10000
    keep_checkpoints: int = 3
    data_segment_steps: int = 1000  # the input pipeline is re-seeded every N steps (exact resume)
    # distribution and speed
    elastic: bool = False  # Horovod elastic mode: survive a lost rank, admit new ones (horovodrun --min-np ...)
    commit_every: int = 10  # elastic: commit the state in memory every N steps (the rollback point)
    fp16_allreduce: bool = False
    mixed_precision: str = "off"  # off | bf16 (bfloat16 compute, float32 weights and output)
    xla: bool = False
    num_threads: int = 2  # input pipeline threads per rank
    decode_cache_gb: float = 8.0  # GPU: keep up to this much of the decoded regions in GPU memory; 0 = stream
    tf_threads: int = 0  # TF intra-op threads per rank; 0 = TensorFlow's default
    progress: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Range checks of the training settings (the specs check their own when built)."""
        def need(cond, msg):
            if not cond:
                raise ValueError(f"invalid training setting: {msg}")

        # inf passes every range check below (and nan none): refuse both by name, for every float.
        for f in fields(self):
            value = getattr(self, f.name)
            need(not isinstance(value, float) or math.isfinite(value),
                 f"{f.name} must be a finite number, got {value}")
        for name, cls in SPECS.items():
            need(isinstance(getattr(self, name), cls), f"{name} must be a {cls.__name__}")
        need(self.optimizer in ("adagrad", "adam", "momentum"),
             f"optimizer must be adagrad, adam or momentum, got {self.optimizer!r}")
        # fp16 would need loss scaling across two optimisers; bf16 has float32's range and needs none.
        need(self.mixed_precision in ("off", "bf16"),
             f"mixed_precision must be off or bf16, got {self.mixed_precision!r}")
        need(self.lr_schedule in ("constant", "cosine"), f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        need(self.loss in ("l2", "l1"), f"loss must be l2 or l1, got {self.loss!r}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        need(self.conv_lr >= 0 and self.fc_lr >= 0, "learning rates must be >= 0")
        need(self.eval_extension >= 0, f"eval_extension must be >= 0 (0 = the recipe's), got {self.eval_extension}")
        need(self.ckpt_every >= 1 and self.eval_every >= 0 and self.log_every >= 1,
             "ckpt_every and log_every must be >= 1, eval_every >= 0")
        need(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        need(self.data_segment_steps >= 1, "data_segment_steps must be >= 1")
        need(self.commit_every >= 1, f"commit_every must be >= 1, got {self.commit_every}")
        need(self.decode_cache_gb >= 0, f"decode_cache_gb must be >= 0, got {self.decode_cache_gb}")
        need(self.stage >= 1, f"stage must be >= 1, got {self.stage}")
        need(self.stage == 1 or self.previous, f"stage {self.stage} needs the run of stage {self.stage - 1}: "
             f"--previous RUN (or --from RUN)")
        need(self.sigma > 0, f"sigma must be > 0, got {self.sigma}")
        need(self.joint_weights in ("own", "all"), f"joint_weights must be own or all, got {self.joint_weights!r}")
        need(not self.model.joint_input or self.stage >= 2,
             "joint_input makes a cascade stage's network (it is told the joint it refines): it needs --stage 2 or more")
        need(not self.model.joint_input or self.joint_weights == "own",
             "a joint-conditioned network (joint_input) regresses only the joint it is given: "
             "--joint-weights all cannot train it; use --joint-weights own")

    @property
    def test_extension(self) -> float:
        """The test crop's box extension: ``eval_extension``, or the recipe's (``AugmentSpec``) when 0."""
        return self.eval_extension if self.eval_extension > 0 else self.augment.test_extension

    def to_dict(self) -> dict[str, Any]:
        """Every setting by its flat name (the specs' fields beside the others)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out.update(value.to_dict() if f.name in SPECS else {f.name: value})
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The configuration from settings by flat name (``to_dict``'s form; missing ones take their
        defaults). Raises ``ValueError`` for an unknown or invalid setting."""
        unknown = sorted(set(d) - set(SETTINGS))
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        own = {k: v for k, v in d.items() if SETTINGS[k].holder == k}
        try:
            specs = {name: spec.from_dict(d) for name, spec in SPECS.items()}
        except ValueError as e:
            raise ValueError(f"invalid training setting: {e}") from None
        return cls(**own, **specs)

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with ``overrides`` (settings by flat name) applied; None values are ignored, unknown names
        are an error."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return TrainConfig.from_dict({**self.to_dict(), **overrides})


class Setting(NamedTuple):
    """One training setting: its flat name, the ``TrainConfig`` field holding it (``holder``: the
    field itself, or ``model`` / ``augment`` for a spec's field), its type and base default."""

    name: str
    holder: str
    type: type
    default: Any


def _settings() -> dict[str, Setting]:
    """Every setting by flat name, in ``TrainConfig``'s order with each spec's fields in its place."""
    out: dict[str, Setting] = {}
    for f in fields(TrainConfig):
        owner = SPECS.get(f.name, TrainConfig)
        hints = typing.get_type_hints(owner)
        inner = fields(owner) if f.name in SPECS else [f]
        for g in inner:
            if g.name in out:  # a spec field named like another setting would have two meanings
                raise TypeError(f"the training setting {g.name!r} is defined twice")
            default = g.default_factory() if g.default is dataclasses.MISSING else g.default
            out[g.name] = Setting(g.name, f.name, hints[g.name], default)
    return out


SETTINGS = _settings()


def option(name: str, value: Any = None) -> str:
    """The command-line option of setting ``name`` (``--batch-size``), or the option that sets it to
    ``value`` (``--batch-size 64``; ``--flip`` / ``--no-flip`` for a bool)."""
    flag = name.replace("_", "-")
    if value is None:
        return f"--{flag}"
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


_REFERENCE = dict(input_size=227, width=1.0, fc_units=4096, dropout=0.6, batch_size=128,
                  optimizer="adagrad", conv_lr=0.0005, fc_lr=0.0005, initial_accumulator=1e-4,
                  shift=0.1, flip=True, eval_every=250, ckpt_every=10000, seed=1701)

PRESETS: dict[str, dict[str, Any]] = {
    "lsp-ext-imagenet": dict(_REFERENCE, data="data/lsp-ext", out="runs/lsp-ext-imagenet",
                             weights="weights/bvlc_alexnet.tf", ext_min=1.2, ext_max=2.0,
                             fix_conv_steps=10000, max_steps=400000),
    "lsp-ext-scratch": dict(_REFERENCE, data="data/lsp-ext", out="runs/lsp-ext-scratch",
                            ext_min=1.5, ext_max=2.0, max_steps=400000),
    "lsp": dict(_REFERENCE, data="data/lsp", out="runs/lsp", ext_min=1.5, ext_max=2.0,
                max_steps=100000),
    "mpii-imagenet": dict(_REFERENCE, data="data/mpii", out="runs/mpii-imagenet",
                          weights="weights/bvlc_alexnet.tf", ext_min=1.0, ext_max=1.2,
                          fix_conv_steps=10000, max_steps=400000),
    "mpii-scratch": dict(_REFERENCE, data="data/mpii", out="runs/mpii-scratch", ext_min=1.0,
                         ext_max=1.2, max_steps=400000),
    # CPU smoke preset: deliberate deviations from the reference, see the module docstring.
    "synthetic-cpu": dict(data="data/synthetic", out="runs/synthetic-cpu", input_size=113, width=0.5,
                          fc_units=1024, dropout=0.0, init="he", norm="batchnorm", pool5=False, loss="l1",
                          batch_size=16, optimizer="adam", conv_lr=2e-3, fc_lr=2e-3, lr_schedule="cosine",
                          ext_min=1.0, ext_max=1.2, shift=0.1, flip=True,
                          max_steps=3000, max_minutes=9.5, eval_every=1000, eval_batch_size=64,
                          log_every=50, ckpt_every=500, data_segment_steps=500, seed=1701),
}


def _stages(name: str, stage1: dict, **settings) -> dict[str, dict[str, Any]]:
    """The cascade presets of a stage-1 preset: stages 2 and 3 on the same data with the same network,
    optimiser and flips, each trained from the newest checkpoint of the stage before (``previous``)."""
    out = {}
    for stage in (2, 3):
        before = name if stage == 2 else f"{name}-stage{stage - 1}"
        out[f"{name}-stage{stage}"] = dict(stage1, stage=stage, previous=f"runs/{before}",
                                            out=f"runs/{name}-stage{stage}", weights="", fix_conv_steps=0,
                                            **settings)
    return out


# Stages 2-3 of the reference presets (227 px, the stage-1 recipe's optimiser) and of the CPU preset.
# sigma 0.6 and the joint-conditioned network: measured on the synthetic set (README, "The cascade")
_CASCADE = dict(sigma=0.6, joint_input=True, joint_weights="own")
for _name in ("lsp-ext-imagenet", "lsp-ext-scratch", "mpii-imagenet", "mpii-scratch"):
    PRESETS.update(_stages(_name, PRESETS[_name], max_steps=100000, **_CASCADE))
# 1500 steps: better than 3000 on the synthetic set (README, "The cascade"), about 5 minutes here
PRESETS.update(_stages("synthetic-cpu", PRESETS["synthetic-cpu"], max_steps=1500, max_minutes=9.5,
                       eval_every=500, **_CASCADE))


def preset(name: str, **overrides) -> TrainConfig:
    """The preset ``name`` with ``overrides`` (settings by flat name; None values ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], "preset": name}).replace(**overrides)
