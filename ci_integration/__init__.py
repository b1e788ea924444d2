"""CI-aware Docker builds, caches and containers for GitHub Actions and Jenkins."""

from __future__ import annotations

__version__ = "0.1.0"
