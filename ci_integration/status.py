"""Statuses: enums whose members print, format and serialize to JSON as their value.

The JSON outputs and the log keep the words users read (``exact``, ``uploaded``);
the code compares members, so a misspelt status is an error where it is written.
This is ``enum.StrEnum``, which Python 3.10 lacks.
"""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)
