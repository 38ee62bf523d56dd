"""State in S3, as Terraform's s3 backend keeps it: a key, its workspaces under `env:/`,
or every key matching a glob. One ListObjectsV2 page carries the ETags of a thousand
states, so an unchanged poll costs a listing and nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from monitor.statesrc.backend import MAX_STATE_BYTES, Entry, Unreachable, glob_regex, literal_prefix
from monitor.statesrc.spec import has_glob

# The s3 backend's default workspace_key_prefix: env:/<workspace>/<key>.
WORKSPACE_PREFIX = "env:/"
S3Factory = Callable[[], Any]


def boto3_factory(endpoint_url: str | None = None) -> S3Factory:
    """A boto3 S3 client; credentials and region come from the standard AWS chain."""

    def make() -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise Unreachable("s3:// sources need boto3: pip install 'driftline[s3]'") from None
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10),
        )

    return make


def _workspace(key: str) -> str:
    if key.startswith(WORKSPACE_PREFIX):
        return key[len(WORKSPACE_PREFIX) :].split("/", 1)[0] or "default"
    return "default"


class S3Backend:
    """`bucket/key` (plus `env:/*/key`) or `bucket/glob`, listed for ETags."""

    def __init__(self, location: str, factory: S3Factory) -> None:
        self.bucket, _, self.key = location.partition("/")
        self.factory = factory
        self._client: Any = None
        self._glob = glob_regex(self.key) if has_glob(self.key) else None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.factory()
        return self._client

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            resp = self.client.list_objects_v2(**kwargs)
            yield from resp.get("Contents", [])
            if not resp.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    def _wanted(self) -> Iterator[dict[str, Any]]:
        if self._glob is not None:
            for obj in self._objects(literal_prefix(self.key)):
                if self._glob.match(obj["Key"]):
                    yield obj
            return
        for obj in self._objects(self.key):
            if obj["Key"] == self.key:
                yield obj
        suffix = "/" + self.key
        for obj in self._objects(WORKSPACE_PREFIX):
            name = obj["Key"][len(WORKSPACE_PREFIX) :]
            if name.endswith(suffix) and "/" not in name[: -len(suffix)]:
                yield obj

    def listing(self) -> list[Entry]:
        try:
            objects = list(self._wanted())
        except Unreachable:
            raise
        except Exception as exc:  # botocore's errors: network, credentials, no bucket
            raise Unreachable(f"s3://{self.bucket}: {exc}") from None
        return [
            Entry(
                f"s3://{self.bucket}/{o['Key']}",
                _workspace(o["Key"]),
                str(o.get("ETag", "")),
                o["LastModified"].timestamp() if o.get("LastModified") else None,
            )
            for o in objects
        ]

    def fetch(self, entry: Entry) -> bytes:
        key = entry.key[len(f"s3://{self.bucket}/") :]
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return bytes(body.read(MAX_STATE_BYTES))
            finally:
                body.close()
        except Exception as exc:
            raise Unreachable(f"{entry.key}: {exc}") from None
