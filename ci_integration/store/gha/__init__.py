"""The GitHub Actions cache as a store (``gha://``): ``store`` is the backend, ``service``
the cache service behind one interface (``v1``, ``v2`` with ``azure_blob``), ``bundle``
where a blob lives, ``rest`` the REST API that lists and deletes, ``handoff`` the
service's variables as export-cache-env hands them to a step.

Nothing is imported here: the CLI reads ``handoff`` on every call, and the backend's
clients load only when a ``gha://`` store is opened."""
