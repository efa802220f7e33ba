"""Object stores: the embedded on-disk store, S3, and the fault/latency wrapper used by tests."""

from __future__ import annotations

from hif.errors import InvalidInput
from hif.store.base import ObjectInfo, ObjectStore, check_key
from hif.store.embedded import EmbeddedStore

__all__ = ["EmbeddedStore", "ObjectInfo", "ObjectStore", "check_key", "open_store"]


def open_store(url: str, *, create: bool = False) -> ObjectStore:
    """Open a store from a URL: a path or ``file://`` URL (embedded), or ``s3://bucket/prefix``."""
    if url.startswith("s3://"):
        from hif.store.s3 import S3Store  # imported lazily: aiobotocore is slow to import

        return S3Store.from_url(url, create=create)
    if url.startswith("file://"):
        url = url[len("file://") :]
    elif "://" in url:
        raise InvalidInput(f"unsupported store URL: {url} (use a path, file:// or s3://)")
    return EmbeddedStore(url, create=create)
