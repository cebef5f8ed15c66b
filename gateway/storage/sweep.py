"""The pieces that interrupted uploads leave in storage, removed when a worker starts.

`kill -9`, the OOM killer or a power cut skip every `finally`: a local upload
leaves its hidden temporary file, an S3 upload an unfinished multipart upload.
Neither is ever visible (an object gets its final name only once complete), but
both hold space. Each starting worker removes, in the background:

- the pieces of uploads that the upload journal (gateway/journal.py) shows were
  begun by a process that is gone, whatever their age;
- on object storage, where a live upload holds no lock that dies with its process,
  also unfinished multipart uploads of recording keys started more than
  GATEWAY_STALE_UPLOAD_AGE ago: the last resort for uploads whose abort failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Protocol, runtime_checkable

from gateway.errors import GatewayError
from gateway.storage.base import Storage

log = logging.getLogger(__name__)


@runtime_checkable
class PartialUploads(Protocol):
    """A storage where an interrupted upload can leave something behind."""

    async def remove_partial_uploads(self, *, keys: Collection[str],
                                     started_before: float) -> int:
        """Remove what abandoned uploads to `keys` left (and, where a store cannot tell
        a live upload from an abandoned one, those started before `started_before`)."""


async def sweep_partial_uploads(
    storages: Mapping[str, Storage], *, abandoned: Mapping[str, Collection[str]],
    stale_after: float,
) -> dict[str, int]:
    """Sweep every storage that can hold such pieces; how many went, by storage name.

    `abandoned`: keys of uploads known to be dead, by storage name. A storage that
    fails is logged and skipped: the next start tries again.
    """
    started_before = time.time() - stale_after
    removed: dict[str, int] = {}
    for name, storage in storages.items():
        storage = getattr(storage, "inner", storage)  # a measured storage: the one it wraps
        if not isinstance(storage, PartialUploads):
            continue
        try:
            removed[name] = await storage.remove_partial_uploads(
                keys=abandoned.get(name, ()), started_before=started_before)
        except GatewayError as exc:
            log.warning("storage %r: could not sweep unfinished uploads: %s", name, exc.detail)
            continue
        except Exception:
            log.exception("storage %r: sweeping unfinished uploads failed", name)
            continue
        if removed[name]:
            log.warning("storage %r: removed %d piece(s) of uploads that a stopped process "
                        "could not finish", name, removed[name])
    return removed
