"""ccache's own statistics, read from a cache directory, so a job can tell its hit
rate without running ccache: every ``stats`` file holds one counter a line.

Counter positions are ccache's (src/core/Statistic.hpp, unchanged since 3.x):
4 cache_miss, 8 preprocessed_cache_hit, 22 direct_cache_hit.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

CACHE_MISS, PREPROCESSED_HIT, DIRECT_HIT = 4, 8, 22


@dataclasses.dataclass(frozen=True)
class CcacheStats:
    hits: int = 0
    misses: int = 0

    @property
    def calls(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.calls if self.calls else None

    def __sub__(self, earlier: CcacheStats) -> CcacheStats:
        return CcacheStats(self.hits - earlier.hits, self.misses - earlier.misses)

    def describe(self) -> str:
        if self.hit_rate is None:
            return "no compilation through ccache"
        return f"{self.hits} hits, {self.misses} misses ({self.hit_rate:.0%} hit rate)"


def is_ccache_dir(path: Path) -> bool:
    return (path / "ccache.conf").is_file() or any(
        (path / shard / "stats").is_file() for shard in "0123456789abcdef"
    )


def read_stats(path: Path) -> CcacheStats:
    """The counters summed over every stats file below ``path`` (missing: zero)."""
    hits = misses = 0
    for folder, _, files in os.walk(path):
        if "stats" not in files:
            continue
        try:
            counters = (Path(folder) / "stats").read_text().split()
        except (OSError, UnicodeDecodeError):
            continue
        values = [int(value) if value.isdigit() else 0 for value in counters]
        values += [0] * (DIRECT_HIT + 1 - len(values))
        hits += values[DIRECT_HIT] + values[PREPROCESSED_HIT]
        misses += values[CACHE_MISS]
    return CcacheStats(hits, misses)
