"""An S3 poller for the bucket a CloudTrail trail delivers to.

Each region folder (AWSLogs/[<org>/]<account>/CloudTrail/<region>/) is listed with
ListObjectsV2 starting after the cursor's mark, so a poll costs what is new, not what the
bucket holds. boto3 is blocking; every call runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from monitor.types import OnItems
from streams.trail_files import (
    ACCOUNT_RE,
    DATED_KEY_RE,
    ORG_RE,
    REGION_RE,
    TrailFile,
    TrailFileSource,
    Vanished,
)


class S3Client(Protocol):
    """The two calls of a boto3 S3 client the poller makes."""

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...


def boto3_client_factory(
    endpoint_url: str | None = None, region: str | None = None
) -> Callable[[], S3Client]:
    """A factory for a boto3 S3 client; credentials come from the standard AWS chain."""

    def make() -> S3Client:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise RuntimeError("trail_s3_bucket needs boto3: pip install 'driftline[s3]'") from None
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=60,
            ),
        )

    return make


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def parse_prefix(prefix: str) -> tuple[str, str, str]:
    """(normalised prefix, where discovery starts, the level it starts at)."""
    norm = prefix.lstrip("/")
    if norm and not norm.endswith("/"):
        norm += "/"
    parts = norm.split("/")[:-1]
    if "AWSLogs" not in parts:
        return norm, norm + "AWSLogs/", "root"
    i = len(parts) - 1 - parts[::-1].index("AWSLogs")
    segs = parts[i + 1 :]
    level = "root"
    if segs and ORG_RE.fullmatch(segs[0]):
        level, segs = "org", segs[1:]
    if segs:
        if not ACCOUNT_RE.fullmatch(segs[0]):
            level = "bad"
        elif len(segs) == 1:
            level = "account"
        elif segs[1] != "CloudTrail":
            level = "bad"
        elif len(segs) == 2:
            level = "trail"
        elif len(segs) == 3 and REGION_RE.fullmatch(segs[2]):
            level = "stream"
        else:
            level = "bad"
    if level == "bad":
        raise ValueError(
            f"trail_s3_prefix: {prefix!r} must be the trail's key prefix (the part before "
            "AWSLogs/) or a folder down to AWSLogs/[<org-id>/]<account>/CloudTrail/<region>/"
        )
    return norm, norm, level


class TrailS3Source(TrailFileSource):
    """New CloudTrail log objects in `bucket` under `prefix`, in name order, each once."""

    kind = "trail_s3"
    atomic_files = True

    def __init__(
        self,
        bucket: str,
        prefix: str,
        on_items: OnItems,
        cursor_path: Path,
        *,
        poll_interval: float = 30.0,
        client_factory: Callable[[], S3Client] | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        discover_interval: float = 300.0,
        max_files_per_poll: int = 500,
        **options: Any,
    ) -> None:
        if not bucket:
            raise ValueError("trail_s3_bucket: a bucket name is required")
        self.bucket = bucket
        self.prefix, self._start, self._level = parse_prefix(prefix)
        self.client_factory = client_factory or boto3_client_factory(endpoint_url, region)
        self.discover_interval = discover_interval
        self._client: S3Client | None = None
        self._known: set[str] | None = None
        self._discovered_at = 0.0
        super().__init__(
            on_items,
            cursor_path,
            source_id=f"s3://{bucket}/{self.prefix}",
            poll_interval=poll_interval,
            max_files_per_poll=max_files_per_poll,
            **options,
        )

    def _prepare(self) -> None:
        self._client = self.client_factory()

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("trail_s3: not started")
        return self._client

    # -- discovery: which region folders exist --

    def _folders(self, prefix: str) -> list[str]:
        out: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            resp = self.client.list_objects_v2(**kwargs)
            out.extend(p["Prefix"] for p in resp.get("CommonPrefixes", []))
            if not resp.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    def _walk(self, prefix: str, level: str, found: set[str]) -> None:
        if level == "stream":
            found.add(prefix)
            return
        if level == "account":
            # Only CloudTrail/ holds events (not CloudTrail-Digest/ or CloudTrail-Insight/).
            self._walk(prefix + "CloudTrail/", "trail", found)
            return
        for child in self._folders(prefix):
            name = child[len(prefix) : -1]
            if level == "root" and ORG_RE.fullmatch(name):
                self._walk(child, "org", found)
            elif level in ("root", "org") and ACCOUNT_RE.fullmatch(name):
                self._walk(child, "account", found)
            elif level == "trail" and REGION_RE.fullmatch(name):
                found.add(child)

    def discover(self) -> set[str]:
        """The region folders below the prefix (blocking)."""
        found: set[str] = set()
        self._walk(self._start, self._level, found)
        return found

    # -- listing and reading --

    def _list(self, limit: int) -> list[TrailFile]:
        now = self.monotonic()
        if self._known is None or now - self._discovered_at >= self.discover_interval:
            self._known = self.discover()
            self._discovered_at = now
        out: list[TrailFile] = []
        for stream in sorted(self._known | self.cursor.streams.keys()):
            out.extend(self._list_stream(stream, limit))
        return out

    def _list_stream(self, stream: str, limit: int) -> list[TrailFile]:
        out: list[TrailFile] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": stream}
        start = self._start_after(stream, True)
        if start:
            kwargs["StartAfter"] = stream + start
        while True:
            resp = self.client.list_objects_v2(**kwargs)
            for obj in resp.get("Contents", []):
                name = obj["Key"]
                key = name[len(stream) :]
                if not DATED_KEY_RE.fullmatch(key) or self._is_done(stream, key):
                    continue
                out.append(
                    TrailFile(
                        stream,
                        key,
                        f"s3://{self.bucket}/{name}",
                        int(obj.get("Size", 0)),
                        str(obj.get("ETag", "")),
                    )
                )
                if len(out) >= limit:
                    return out
            if not resp.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    def _read(self, f: TrailFile) -> bytes:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=f.stream + f.key)
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise Vanished(f.location) from None
            raise
        body = resp["Body"]
        try:
            return bytes(body.read(self.max_file_bytes + 1))
        finally:
            body.close()
