"""Every piece of application state, each under its own typed key."""

from aiohttp import web

from gateway.auth import ApiKeyAuthenticator, UrlSigner
from gateway.catalog import Catalog
from gateway.recordings import Recordings
from gateway.settings import Settings
from gateway.storage import StorageRegistry

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", Catalog)
STORAGES = web.AppKey("storages", StorageRegistry)
RECORDINGS = web.AppKey("recordings", Recordings)
API_KEYS = web.AppKey("api_keys", ApiKeyAuthenticator)
SIGNER = web.AppKey("signer", UrlSigner)
