"""Where recording bytes live: the Storage protocol and the named storages."""

from gateway.storage.base import (
    ByteSource,
    CheckReport,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    StoredObject,
)
from gateway.storage.local import LocalStorage
from gateway.storage.registry import DEFAULT_STORAGE, StorageRegistry

__all__ = [
    "DEFAULT_STORAGE",
    "ByteSource",
    "CheckReport",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "StorageRegistry",
    "StoredObject",
]
