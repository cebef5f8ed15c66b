"""Looking at a storage from outside the gateway: what is stored, and breaking it on purpose.

Tests use these to check what the gateway left behind (objects, temporary files,
unfinished multipart uploads) on each backend, without going through its code.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import boto3

from gateway.settings import Settings
from gateway.storage.config import StorageConfig


class StorageProbe(Protocol):
    backend: str

    def objects(self) -> list[str]:
        """Every object or file stored, temporary ones and unfinished uploads included."""

    def put(self, key: str, data: bytes) -> None:
        """Store an object as another writer would (a meeting bot, the meeting API)."""

    def get(self, key: str) -> bytes:
        """An object's bytes, read past the gateway."""

    def remove_all(self) -> None:
        """Delete every object behind the gateway's back."""

    def break_storage(self) -> None:
        """Make the storage unusable (the volume or the bucket goes away)."""


class LocalProbe:
    backend = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def objects(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def remove_all(self) -> None:
        for path in self.root.rglob("*"):
            if path.is_file():
                path.unlink()

    def break_storage(self) -> None:
        shutil.rmtree(self.root)


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


class S3Probe:
    backend = "s3"

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.client = s3_client(endpoint)
        self.bucket = bucket

    def objects(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        return sorted([o["Key"] for o in listed] + [f"{u['Key']} (unfinished upload)"
                                                     for u in uploads])

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def remove_all(self) -> None:
        for item in self.client.list_objects_v2(Bucket=self.bucket).get("Contents", []):
            self.client.delete_object(Bucket=self.bucket, Key=item["Key"])

    def break_storage(self) -> None:
        self.remove_all()
        self.client.delete_bucket(Bucket=self.bucket)


class AzureProbe:
    """A container seen through the SDK's synchronous client.

    `objects()` lists committed blobs only: staged blocks that were never committed are
    no blob (nothing can read them) and the service discards them; `uncommitted()` lists
    the names that hold such blocks, for the tests about interrupted uploads.
    """

    backend = "azure"

    def __init__(self, config: StorageConfig) -> None:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient(config.endpoint, credential={
            "account_name": config.account_name, "account_key": config.account_key})
        self.container = service.get_container_client(config.bucket)

    def objects(self) -> list[str]:
        return sorted(blob.name for blob in self.container.list_blobs())

    def uncommitted(self) -> list[str]:
        committed = set(self.objects())
        return sorted(blob.name for blob in self.container.list_blobs(
            include=["uncommittedblobs"]) if blob.name not in committed)

    def put(self, key: str, data: bytes) -> None:
        self.container.upload_blob(key, data, overwrite=True)

    def get(self, key: str) -> bytes:
        return self.container.download_blob(key).readall()

    def remove_all(self) -> None:
        for name in self.objects():
            self.container.delete_blob(name)

    def break_storage(self) -> None:
        self.container.delete_container()


class GcsProbe:
    """A GCS bucket seen through the emulator's JSON API.

    GCS lists no resumable upload sessions (they are not objects and vanish after a
    week), so `objects()` can show only objects: an unfinished upload is invisible by
    design, and the tests check that no object appears.
    """

    backend = "gcs"

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.api = f"{endpoint}/storage/v1/b/{bucket}"
        self.upload = f"{endpoint}/upload/storage/v1/b/{bucket}/o"
        self.bucket = bucket

    def _object(self, key: str) -> str:
        return f"{self.api}/o/{urllib.parse.quote(key, safe='')}"

    def objects(self) -> list[str]:
        with urllib.request.urlopen(f"{self.api}/o", timeout=10) as answer:
            items = json.loads(answer.read()).get("items", [])
        return sorted(item["name"] for item in items)

    def put(self, key: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": key})
        request = urllib.request.Request(f"{self.upload}?{query}", data=data, method="POST",
                                         headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request, timeout=10).close()

    def get(self, key: str) -> bytes:
        with urllib.request.urlopen(f"{self._object(key)}?alt=media", timeout=10) as answer:
            body: bytes = answer.read()
            return body

    def remove_all(self) -> None:
        for key in self.objects():
            urllib.request.urlopen(urllib.request.Request(self._object(key), method="DELETE"),
                                   timeout=10).close()

    def break_storage(self) -> None:
        self.remove_all()
        urllib.request.urlopen(urllib.request.Request(self.api, method="DELETE"),
                               timeout=10).close()


def probe_for(config: StorageConfig) -> StorageProbe:
    if config.type == "gcs":
        return GcsProbe(config.endpoint, config.bucket)
    if config.type == "local":
        assert config.path is not None
        return LocalProbe(config.path)
    if config.type == "azure":
        return AzureProbe(config)
    return S3Probe(config.endpoint, config.bucket)


def default_probe(settings: Settings) -> StorageProbe:
    """The probe of the storage new recordings go to (a named one, or the environment's)."""
    return probe_for(next(c for c in settings.storage_configs()
                          if c.name == settings.default_storage))
