"""The named storages of a deployment; `default` is the one the environment describes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from gateway.errors import StorageUnavailable, Unprocessable
from gateway.storage.base import Storage

DEFAULT_STORAGE = "default"


class StorageRegistry(Mapping[str, Storage]):
    """Storages by name. Media files remember theirs, so reads never guess."""

    def __init__(
        self, storages: Mapping[str, Storage], default: str = DEFAULT_STORAGE,
        tenant_storages: Mapping[str, str] | None = None,
    ) -> None:
        if default not in storages:
            raise ValueError(f"the default storage {default!r} is not configured")
        self._storages = dict(storages)
        self._tenant_storages = dict(tenant_storages or {})
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

    def for_reading_media(self, name: str, backend: str) -> Storage:
        """The storage of a media file, refusing one whose backend changed under it."""
        storage = self.for_reading(name)
        if storage.backend != backend:
            raise StorageUnavailable(
                f"Storage {name!r} is now {storage.backend}, but this file was stored on "
                f"{backend}; configure the old storage under its own name")
        return storage

    def resolve(self, backend: str, name: str | None = None) -> str | None:
        """The storage an upstream's media file means: by name, else by backend."""
        if name is not None and name in self._storages:
            return name
        if self._storages[self.default].backend == backend:
            return self.default
        return next((n for n, s in self._storages.items() if s.backend == backend), None)

    def for_new_recording(self, requested: str | None, tenant: str) -> str:
        """Stream's order: the storage the request names, else the tenant's, else the default."""
        if requested is None:
            return self._tenant_storages.get(tenant, self.default)
        if requested not in self._storages:
            raise Unprocessable(f"Unknown storage {requested!r}")
        return requested

    def wrapped(self, wrap: Callable[[Storage], Storage]) -> StorageRegistry:
        """The same storages and choices, each storage put through `wrap`."""
        return StorageRegistry({name: wrap(storage) for name, storage in self._storages.items()},
                               self.default, self._tenant_storages)

    async def close(self) -> None:
        for storage in reversed(list(self._storages.values())):
            await storage.close()
