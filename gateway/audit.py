"""The audit lock: which recordings may be deleted one at a time.

Some tenants must keep every recording for an audit (Voki's plans): with
`delete_policy = "deny"` nobody deletes a recording of theirs through the API, and
only retention removes it. A recording on legal hold is kept from every delete,
retention included, until an admin releases it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.errors import Conflict
from gateway.models import DeletePolicy, Recording
from gateway.storage.config import TenantConfig

DENIED_BY_POLICY = "Recordings of this tenant cannot be deleted individually (audit policy)"
ON_LEGAL_HOLD = "Recording is on legal hold"


class AuditLock:
    """Each tenant's delete policy; tenants not named allow deletes."""

    def __init__(self, policies: Mapping[str, DeletePolicy] | None = None) -> None:
        self._policies = dict(policies or {})

    @classmethod
    def from_tenants(cls, tenants: Iterable[TenantConfig]) -> AuditLock:
        return cls({t.name: t.delete_policy for t in tenants})

    def policy(self, tenant: str) -> DeletePolicy:
        return self._policies.get(tenant, DeletePolicy.ALLOW)

    def check_delete(self, recording: Recording) -> None:
        """Raise Conflict (409) if this recording may not be deleted on its own."""
        if self.policy(recording.tenant) is DeletePolicy.DENY:
            raise Conflict(DENIED_BY_POLICY)
        if recording.legal_hold:
            raise Conflict(ON_LEGAL_HOLD)
