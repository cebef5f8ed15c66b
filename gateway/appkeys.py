"""Every piece of application state, each under its own typed key."""

from aiohttp import web

from gateway.access import Access, Authenticator
from gateway.auth import UrlSigner
from gateway.catalog import Catalog
from gateway.metrics import Metrics
from gateway.models import Clock
from gateway.peaks import Waveforms
from gateway.recordings import Ingest, Recordings
from gateway.retention import Retention
from gateway.settings import Settings
from gateway.shutdown import Drain
from gateway.storage import StorageRegistry
from gateway.upstream import Upstream

SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")  # what the catalog stamps and retention ages by
ACCESS = web.AppKey("access", Access)
DRAIN = web.AppKey("drain", Drain)  # set when the worker is shutting down
# Standalone mode only: the embedded catalog, its API keys and the bot side.
CATALOG = web.AppKey("catalog", Catalog)
INGEST = web.AppKey("ingest", Ingest)
RETENTION = web.AppKey("retention", Retention)
STORAGES = web.AppKey("storages", StorageRegistry)
RECORDINGS = web.AppKey("recordings", Recordings)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
SIGNER = web.AppKey("signer", UrlSigner)
WAVEFORMS = web.AppKey("waveforms", Waveforms)  # waveform peaks, cached beside each file
METRICS = web.AppKey("metrics", Metrics)  # this app's own Prometheus registry
# Sidecar mode only: the meeting API in front of which the gateway runs.
UPSTREAM = web.AppKey("upstream", Upstream)
