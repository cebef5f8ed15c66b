"""Retention: recordings older than their tenant's limit are deleted, storage first.

Stream keeps call recordings two weeks by default; Voki's plans set their own
limit. Age counts from `created_at`, so a recording left `in_progress` by a bot
that died goes too. Recordings on legal hold stay; a tenant's `delete_policy =
"deny"` does not stop retention (it forbids deleting one recording at a time, and
retention is the plan's own rule). No HTTP here: the background task and
`gateway retention run` share `Retention.sweep`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from gateway.catalog import Catalog, Expiry
from gateway.models import Clock, Recording, system_clock, timestamp
from gateway.recordings import ExpireOutcome, Recordings
from gateway.storage.config import TenantConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """Days a recording is kept: the global default, and each tenant's own (0: forever)."""

    default_days: float = 0.0
    tenant_days: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, default_days: float, tenants: Iterable[TenantConfig]) -> RetentionRules:
        return cls(default_days, {t.name: t.retention_days for t in tenants
                                  if t.retention_days is not None})

    @property
    def enabled(self) -> bool:
        return self.default_days > 0 or any(d > 0 for d in self.tenant_days.values())

    def days_for(self, tenant: str) -> float:
        return self.tenant_days.get(tenant, self.default_days)

    def expiry(self, clock: Clock) -> Expiry:
        """The cutoffs at the clock's current time."""
        now = clock()

        def cutoff(days: float) -> str | None:
            return timestamp(now - timedelta(days=days)) if days > 0 else None

        return Expiry(cutoff(self.default_days),
                      {name: cutoff(days) for name, days in self.tenant_days.items()})


def recording_size(recording: Recording) -> int:
    """Bytes of all its media files."""
    return sum(m.file_size_bytes for m in recording.media_files)


@dataclass
class SweepReport:
    """What one sweep removed (or, in a dry run, would remove).

    Counts always; the recordings themselves only when `listed` (the command prints
    them), so a first sweep through a large backlog holds no more than a batch.
    """

    dry_run: bool
    listed: bool = True
    removed: list[Recording] = field(default_factory=list)
    failed: list[Recording] = field(default_factory=list)
    removed_count: int = 0
    removed_bytes: int = 0
    failed_count: int = 0  # some bytes could not be deleted: retried next sweep
    held: int = 0  # put on hold while the sweep ran
    gone: int = 0  # deleted meanwhile by someone else (another worker)

    def add_removed(self, recording: Recording) -> None:
        self.removed_count += 1
        self.removed_bytes += recording_size(recording)
        if self.listed:
            self.removed.append(recording)

    def add_failed(self, recording: Recording) -> None:
        self.failed_count += 1
        if self.listed:
            self.failed.append(recording)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = (f"retention {verb} {self.removed_count} recording"
                f"{'' if self.removed_count == 1 else 's'} ({self.removed_bytes} bytes)")
        if self.failed_count:
            text += f"; {self.failed_count} failed and stay until the next sweep"
        if self.held:
            text += f"; {self.held} put on legal hold meanwhile, kept"
        if self.gone:
            text += f"; {self.gone} already deleted elsewhere"
        return text


class Retention:
    """Finds expired recordings in batches and deletes them through `Recordings.expire`."""

    def __init__(self, catalog: Catalog, recordings: Recordings, rules: RetentionRules, *,
                 batch: int = 100, clock: Clock = system_clock) -> None:
        self.catalog = catalog
        self.recordings = recordings
        self.rules = rules
        self.batch = batch
        self.clock = clock

    async def sweep(self, *, dry_run: bool = False, listed: bool = True) -> SweepReport:
        """Delete (or only list) every expired, unheld recording, one batch at a time."""
        report = SweepReport(dry_run, listed)
        expiry = self.rules.expiry(self.clock)
        if not expiry.expires_anything:
            return report
        after: tuple[str, int] | None = None
        while batch := await self.catalog.expired_recordings(expiry, limit=self.batch,
                                                             after=after):
            after = (batch[-1].created_at, batch[-1].id)
            for found in batch:
                if dry_run:
                    report.add_removed(found)
                else:
                    await self._expire(found, report)
        if report.removed_count or report.failed_count:
            log.info("%s", report.summary())
        return report

    async def _expire(self, found: Recording, report: SweepReport) -> None:
        try:
            outcome, recording = await self.recordings.expire(found.id)
        except Exception:
            # One recording that cannot go must not keep the others: next sweep retries.
            log.exception("retention: could not delete recording %s", found.id)
            report.add_failed(found)
            return
        if outcome is ExpireOutcome.DELETED and recording is not None:
            log.info("retention: deleted recording %s (tenant %s, user %s, created %s, "
                     "%d bytes)", recording.id, recording.tenant, recording.user_id,
                     recording.created_at, recording_size(recording))
            report.add_removed(recording)
        elif outcome is ExpireOutcome.FAILED:
            log.warning("retention: recording %s keeps its metadata: some of its files "
                        "could not be deleted", found.id)
            report.add_failed(found)
        elif outcome is ExpireOutcome.HELD:
            report.held += 1
        else:
            report.gone += 1

    async def run_periodically(self, interval: float) -> None:
        """Sweep now and every `interval` seconds until cancelled; an error waits a turn."""
        while True:
            try:
                await self.sweep(listed=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention sweep failed; retrying in %g seconds", interval)
            await asyncio.sleep(interval)
