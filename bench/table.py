"""One result row per measured figure, printed with the baseline side by side."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass
class Row:
    section: str
    metric: str
    ours: float
    baseline: float | None = None
    unit: str = ""
    # The ratio ours/baseline must satisfy this ("<= 1.2", ">= 0.9"); None: informational.
    target: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        op, _, bound = self.target.partition(" ")
        value = self.ratio if self.baseline is not None else self.ours
        if value is None:
            return "?"
        met = value <= float(bound) if op == "<=" else value >= float(bound)
        return "ok" if met else "MISSED"


def render(rows: Iterable[Row]) -> str:
    header = ("section", "metric", "ours", "baseline", "ratio", "target", "")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.section,
                row.metric,
                _number(row.ours, row.unit),
                _number(row.baseline, row.unit),
                "" if row.ratio is None else f"{row.ratio:.3f}",
                row.target or "",
                row.verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
        if index == 0:
            out.append("  ".join("-" * width for width in widths).rstrip())
    return "\n".join(out)


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    text = f"{value:.3f}" if isinstance(value, float) and not value.is_integer() else f"{value:.0f}"
    return f"{text} {unit}".strip()
