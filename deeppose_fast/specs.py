"""Settings carried whole: what builds the network (``ModelSpec``) and what the training crops may do
(``AugmentSpec``). Each is defined once here and passed as one object from the configuration to every
user: the model builder and the checkpoint (``ModelSpec``), both input loaders, ``show`` and the pre-crop
rule of ``prepare`` (``AugmentSpec``). Adding a setting means adding a field here and using it where it
matters; the command line, the checkpoint metadata and the resume check follow from the fields.

No heavy imports: this module is read by the command line before TensorFlow or DALI load.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

S = TypeVar("S", bound="_Spec")


class _Spec:
    """Dict round trip and validation shared by the specs (frozen dataclasses of plain values)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[S], values: dict[str, Any]) -> S:
        """The spec from a dict that may hold other keys too (e.g. a whole training configuration, or the
        ``model`` block of an older checkpoint that lacks newer fields: their defaults apply)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self: S, **changes) -> S:
        return dataclasses.replace(self, **changes)

    def _check_finite(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")


@dataclass(frozen=True)
class ModelSpec(_Spec):
    """What builds the regressor (``model.build(spec, num_joints)``), stored in every checkpoint.

    Attributes:
        input_size: S, the network input is (S, S, 3).
        width: multiplier of the conv channel counts (1.0 = AlexNet).
        fc_units: units of fc6 and fc7.
        dropout: dropout rate after fc6 and fc7.
        init: random initialisation, ``dtf`` (truncated normal as the reference) or ``he``.
        norm: ``lrn`` (AlexNet) or ``batchnorm`` (norm1, norm2, and after conv3-5).
        pool5: keep the last max-pool (fc6 then sees a 6 x 6 grid at 227 px).
        joint_input: a cascade stage's joint-conditioned variant: the network also takes the index of the
            joint it refines and regresses that joint alone (``model.build`` says how).
    """

    input_size: int = 227
    width: float = 1.0
    fc_units: int = 4096
    dropout: float = 0.6
    init: str = "dtf"
    norm: str = "lrn"
    pool5: bool = True
    joint_input: bool = False

    def __post_init__(self):
        self._check_finite()
        if self.input_size < 1 or self.width <= 0 or self.fc_units < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"invalid network settings {self.to_dict()}")
        if self.init not in ("dtf", "he"):
            raise ValueError(f"init must be 'dtf' or 'he', got {self.init!r}")
        if self.norm not in ("lrn", "batchnorm"):
            raise ValueError(f"norm must be 'lrn' or 'batchnorm', got {self.norm!r}")


@dataclass(frozen=True)
class AugmentSpec(_Spec):
    """What a training crop may do (the reference recipe's defaults), read by both loaders, ``show`` and
    the pre-crop rule (which must store enough of each image for every crop drawn under it).

    Attributes:
        ext_min, ext_max: the person box is extended by a factor drawn uniformly from this range.
        shift: the crop centre moves by up to this fraction of the crop size, in x and y.
        flip: mirror half of the crops (left and right labels swapped).
        rotation: rotate by up to this many degrees either way.
        scale_jitter: zoom out by up to this fraction (scale ``1 - j``).
    """

    ext_min: float = 1.5
    ext_max: float = 2.0
    shift: float = 0.1
    flip: bool = True
    rotation: float = 0.0
    scale_jitter: float = 0.0

    def __post_init__(self):
        self._check_finite()
        if not 0 < self.ext_min <= self.ext_max:
            raise ValueError(f"the extension range must satisfy 0 < ext_min <= ext_max, got "
                             f"[{self.ext_min}, {self.ext_max}]")
        if self.shift < 0 or not 0 <= self.rotation <= 180 or not 0 <= self.scale_jitter < 1:
            raise ValueError(f"invalid augmentation {self.to_dict()}: shift >= 0, rotation in [0, 180] "
                             f"degrees and scale_jitter in [0, 1) are required")

    @property
    def ext_range(self) -> tuple[float, float]:
        return self.ext_min, self.ext_max

    @property
    def test_extension(self) -> float:
        """The test crop's extension when the configuration names none: the largest training extension,
        as the reference does."""
        return self.ext_max
