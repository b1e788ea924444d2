"""The S3 server of the store tests, for the README examples that use an S3 store."""

from __future__ import annotations

from tests.store.conftest import s3_endpoint, s3_env

__all__ = ["s3_endpoint", "s3_env"]
