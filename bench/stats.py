"""Figures: the median of repeated samples with their spread, and a clock to take them with."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured quantity: every sample, summarised by median, min and max."""

    samples: tuple[float, ...]
    unit: str = "s"

    @classmethod
    def of(cls, samples: Sequence[float], unit: str = "s") -> Figure:
        if not samples:
            raise ValueError("a figure needs at least one sample")
        return cls(tuple(samples), unit)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "n": len(self.samples),
            "samples": list(self.samples),
        }


class Clock:
    """Wall-clock time of a block: `with clock() as c: ...; c.seconds`."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds = 0.0


@contextmanager
def clock() -> Iterator[Clock]:
    c = Clock()
    try:
        yield c
    finally:
        c.seconds = time.perf_counter() - c.started


def ratio(numerator: Figure, denominator: Figure) -> float:
    """Ratio of the medians (how figures are compared throughout)."""
    return numerator.median / denominator.median
