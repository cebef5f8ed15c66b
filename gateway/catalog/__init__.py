"""Recording metadata and credentials: the Catalog protocol and its backends."""

from gateway.catalog.base import (
    ApiKeyInfo,
    Catalog,
    CatalogUnavailable,
    DeletesWithMedia,
    Expiry,
    NewMediaFile,
    NewRecording,
    RecordingCatalog,
)
from gateway.catalog.sqlite import SqliteCatalog

__all__ = [
    "ApiKeyInfo",
    "Catalog",
    "CatalogUnavailable",
    "DeletesWithMedia",
    "Expiry",
    "NewMediaFile",
    "NewRecording",
    "RecordingCatalog",
    "SqliteCatalog",
]
