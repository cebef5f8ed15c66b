"""The named storages of a deployment; `default` is the one the environment describes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from gateway.errors import StorageUnavailable, Unprocessable
from gateway.storage.base import Storage

DEFAULT_STORAGE = "default"


class StorageRegistry(Mapping[str, Storage]):
    """Storages by name. Media files remember theirs, so reads never guess."""

    def __init__(self, storages: Mapping[str, Storage], default: str = DEFAULT_STORAGE) -> None:
        if default not in storages:
            raise ValueError(f"the default storage {default!r} is not configured")
        self._storages = dict(storages)
        self.default = default

    def __getitem__(self, name: str) -> Storage:
        return self._storages[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._storages)

    def __len__(self) -> int:
        return len(self._storages)

    def for_reading(self, name: str) -> Storage:
        """The storage a media file names; a vanished configuration is a server-side fault."""
        try:
            return self._storages[name]
        except KeyError:
            raise StorageUnavailable(f"Storage {name!r} is not configured any more") from None

    def for_new_recording(self, requested: str | None) -> str:
        """The storage name for a new recording: the requested one, else the default."""
        if requested is None:
            return self.default
        if requested not in self._storages:
            raise Unprocessable(f"Unknown storage {requested!r}")
        return requested

    async def close(self) -> None:
        for storage in reversed(list(self._storages.values())):
            await storage.close()
