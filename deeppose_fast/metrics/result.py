"""``EvalResult``: what ``evaluate()`` returns, with its text tables and its JSON form."""
from __future__ import annotations

from dataclasses import dataclass, field

from deeppose_fast.metrics.tables import Curve, Table, format_result, json_float


@dataclass
class EvalResult:
    """The result of :func:`deeppose_fast.metrics.evaluate`. Scores are fractions in [0, 1].

    Attributes:
        dataset, protocol: as passed; description: what the protocol computes (one line).
        threshold: the PCP / PCKh threshold; pck_threshold: the PCK table's threshold (official LSP: 0.2).
        metric: title of the primary table (``"PCP@0.5"`` for LSP, ``"Symmetric PCKh@0.5"`` for dtf MPII,
            ``"PCKh@0.5"`` for official MPII).
        parts: primary table, part name -> score (NaN where the part had no evaluated instance).
        total: the primary table's total (dtf: unweighted mean of the parts; official: pooled).
        counts: primary table, part name -> evaluated instances (joints or sticks).
        tables: every table, by name (dtf: ``PCP``, ``Relaxed PCP``, ``PCKh``, ``Symmetric PCKh``).
        curve: the protocol's PCK(h) curve over ``CURVE_THRESHOLDS`` (or those passed), with its AUC.
        num_people: N; excluded: people left out of PCK(h) (unusable normaliser).
        backend: ``"numba"`` or ``"numpy"``.
    """

    dataset: str
    protocol: str
    description: str
    threshold: float
    pck_threshold: float
    metric: str
    parts: dict[str, float]
    total: float
    counts: dict[str, int]
    tables: dict[str, Table] = field(default_factory=dict)
    curve: Curve | None = None
    num_people: int = 0
    excluded: int = 0
    backend: str = "numba"

    def title(self) -> str:
        return (f"{self.dataset.upper()} | protocol {self.protocol} | threshold {self.threshold:g}"
                + (f" (PCK {self.pck_threshold:g})" if self.pck_threshold != self.threshold else "")
                + f" | {self.num_people} people, {self.excluded} excluded from PCK"
                + f"\n# {self.description}")

    def table(self) -> str:
        """Text tables as the reference training log prints them, titled with protocol and threshold."""
        return format_result(self.title(), list(self.tables.values()), self.curve)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """JSON-ready (NaN -> None)."""
        return {"dataset": self.dataset, "protocol": self.protocol, "description": self.description,
                "threshold": self.threshold, "pck_threshold": self.pck_threshold, "metric": self.metric,
                "parts": {k: json_float(v) for k, v in self.parts.items()},
                "total": json_float(self.total), "counts": dict(self.counts),
                "tables": {k: t.to_dict() for k, t in self.tables.items()},
                "curve": None if self.curve is None else self.curve.to_dict(),
                "num_people": self.num_people, "excluded": self.excluded, "backend": self.backend}
