"""A measured figure beside its target, and the table that prints them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Figure:
    """One measured number (or a few) with its target and whether the target was met."""

    name: str
    value: str  # as printed, with units
    target: str  # as printed, e.g. "≤ 1.20×"
    passed: bool
    notes: list[str] = field(default_factory=list)  # how it was measured, what it stands on
    data: dict = field(default_factory=dict)  # the raw numbers, for tests and for reading

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


def print_figures(figures: Iterable[Figure], out: TextIO) -> None:
    figures = list(figures)
    width = max([len(f.name) for f in figures] + [6])
    value_width = max([len(f.value) for f in figures] + [5])
    target_width = max([len(f.target) for f in figures] + [6])
    header = f"{'figure':<{width}}  {'value':<{value_width}}  {'target':<{target_width}}  verdict"
    print(header, file=out)
    print("-" * len(header), file=out)
    for figure in figures:
        print(
            f"{figure.name:<{width}}  {figure.value:<{value_width}}  "
            f"{figure.target:<{target_width}}  {figure.verdict}",
            file=out,
        )
    for figure in figures:
        if figure.notes:
            print(f"\n{figure.name} ({figure.verdict})", file=out)
            for note in figure.notes:
                print(f"  {note}", file=out)


def table(rows: list[tuple], headers: tuple) -> list[str]:
    """Rows as aligned text lines, for the notes of a figure."""
    cells = [tuple(str(c) for c in row) for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
