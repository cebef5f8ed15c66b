"""Every piece of application state, each under its own typed key."""

from aiohttp import web

from gateway.access import Access, Authenticator
from gateway.auth import UrlSigner
from gateway.catalog import Catalog
from gateway.recordings import Ingest, Recordings
from gateway.settings import Settings
from gateway.storage import StorageRegistry
from gateway.upstream import Upstream

SETTINGS = web.AppKey("settings", Settings)
ACCESS = web.AppKey("access", Access)
# Standalone mode only: the embedded catalog, its API keys and the bot side.
CATALOG = web.AppKey("catalog", Catalog)
INGEST = web.AppKey("ingest", Ingest)
STORAGES = web.AppKey("storages", StorageRegistry)
RECORDINGS = web.AppKey("recordings", Recordings)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
SIGNER = web.AppKey("signer", UrlSigner)
# Sidecar mode only: the meeting API in front of which the gateway runs.
UPSTREAM = web.AppKey("upstream", Upstream)
