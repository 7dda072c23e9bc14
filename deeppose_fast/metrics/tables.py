"""Score tables and their text form, printed like the reference training log: a title line, a header row
of part names, a row of scores as fractions with 3 decimals (``0.557``), the table's total last.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


def json_float(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


@dataclass
class Table:
    """One score table.

    Attributes:
        name: ``"PCP"``, ``"Relaxed PCP"``, ``"PCKh"``, ``"Symmetric PCKh"`` or ``"PCK"``.
        threshold: the table's threshold (PCP: fraction of the stick length; PCK: of the normaliser).
        scores: part name -> fraction in [0, 1] (NaN where the part had no evaluated instance).
        counts: part name -> evaluated instances (joints or sticks, summed over the part's members).
        total_name: ``"mPCP"``, ``"mPCKh"``, ``"mSymmetricPCKh"`` or ``"Total"``.
        total: the total, a fraction in [0, 1].
        total_rule: ``"mean"`` (unweighted mean of the parts) or ``"pooled"`` (correct / evaluated).
    """

    name: str
    threshold: float
    scores: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    total_name: str = "Total"
    total: float = math.nan
    total_rule: str = "mean"

    @property
    def title(self) -> str:
        return f"{self.name}@{self.threshold:g}"

    def format(self) -> str:
        """Three lines: ``title  total_name  total``, the header row, the score row."""
        names = list(self.scores) + [self.total_name]
        values = list(self.scores.values()) + [self.total]
        widths = [max(len(n), 5) for n in names]
        header = "  ".join(n.rjust(w) for n, w in zip(names, widths))
        row = "  ".join(("-" if math.isnan(v) else f"{v:.3f}").rjust(w) for v, w in zip(values, widths))
        total = "-" if math.isnan(self.total) else f"{self.total:.3f}"
        return f"{self.title}  {self.total_name} ({self.total_rule}) {total}\n{header}\n{row}"

    def to_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold,
                "scores": {k: json_float(v) for k, v in self.scores.items()},
                "counts": dict(self.counts), "total_name": self.total_name,
                "total": json_float(self.total), "total_rule": self.total_rule}


@dataclass
class Curve:
    """PCK as a function of the threshold.

    Legend: T thresholds.

    Attributes:
        name: ``"PCKh"`` or ``"PCK"``; rule: ``"mean"`` over joints or ``"pooled"`` (as the protocol's
            PCK total).
        thresholds: (T,) increasing; values: (T,) PCK at each threshold, fractions in [0, 1].
        auc: trapezoidal area under the curve divided by the threshold range, in [0, 1].
    """

    name: str
    rule: str
    thresholds: list[float]
    values: list[float]
    auc: float

    def value_at(self, threshold: float) -> float:
        """The value at a threshold of the grid (exact match, so 0.1 never reads 0.11)."""
        try:
            return self.values[self.thresholds.index(threshold)]
        except ValueError:
            raise ValueError(f"{threshold} is not on the curve's grid {self.thresholds}") from None

    def format(self) -> str:
        picks = [t for t in (0.1, 0.2, 0.3, 0.4, 0.5) if t in self.thresholds]
        cells = "  ".join(f"@{t:g} {self.value_at(t):.3f}" for t in picks)
        lo, hi = self.thresholds[0], self.thresholds[-1]
        return f"{self.name} curve ({self.rule}) AUC[{lo:g}, {hi:g}] {self.auc:.3f}  {cells}".rstrip()

    def to_dict(self) -> dict:
        return {"name": self.name, "rule": self.rule, "thresholds": list(self.thresholds),
                "values": [json_float(v) for v in self.values], "auc": json_float(self.auc)}


def format_result(title: str, tables: list[Table], curve: Curve | None = None) -> str:
    """The full text: the title line, then each table (blank line between), then the curve line."""
    parts = [title] + [t.format() for t in tables]
    if curve is not None:
        parts.append(curve.format())
    return "\n\n".join(parts)
