"""The GitHub Actions cache as a store (``gha://``): ``store`` is the backend, ``service``
the cache service behind one interface (``v1``, ``v2`` with ``azure_blob``), ``bundle``
where a blob lives, ``rest`` the REST API that lists and deletes."""

from __future__ import annotations

from ci_integration.store.gha.store import GhaStore

__all__ = ["GhaStore"]
