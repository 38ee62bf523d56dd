"""CloudTrail log-file sources: a watched directory and an S3 bucket (real moto server)."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.types import ChangeEvent, Decoded, DecodeError
from streams.trail_cursor import CursorError, TrailCursor
from streams.trail_dir import TrailDirSource
from streams.trail_files import decode_file
from streams.trail_s3 import TrailS3Source, parse_prefix
from tests.support import moto_s3
from tests.support.moto_s3 import SECRET, s3_client
from tests.support.realdata import CLOUDTRAIL

# A real S3 API (moto server) and credentials for it, shared with other modules.
s3_endpoint = moto_s3.s3_endpoint
aws_env = moto_s3.aws_env

pytestmark = pytest.mark.timeout(60)

INVICTUS = CLOUDTRAIL / "invictus_aws_dataset"
ACCOUNT = "218007301253"
DAY = "2023/07/10"
DAY_DIR = f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/{DAY}"
ORG = "o-aa11bb22cc"


def invictus() -> list[Path]:
    files = sorted(INVICTUS.glob("*.json"))
    assert len(files) == 55
    return files


def ids_of(files: list[Path]) -> set[str]:
    return {r["eventID"] for f in files for r in orjson.loads(f.read_bytes())["Records"]}


def gzipped(f: Path) -> bool:
    """Every third file is delivered gzipped, as CloudTrail does for all of them."""
    return invictus().index(f) % 3 == 0


def payload(f: Path) -> tuple[str, bytes]:
    if gzipped(f):
        return f.name + ".gz", gzip.compress(f.read_bytes(), mtime=0)
    return f.name, f.read_bytes()


def place(folder: Path, files: list[Path]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        name, data = payload(f)
        (folder / name).write_bytes(data)


class Collector:
    """An on_items that counts event ids and rejection reasons and can fail on demand."""

    def __init__(self) -> None:
        self.ids: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.details: list[str] = []
        self.fail = 0
        self._changed = asyncio.Condition()

    async def __call__(self, items: list[Decoded]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("store unavailable")
        for item in items:
            if isinstance(item, ChangeEvent):
                self.ids[item.event_id] += 1
            elif isinstance(item, DecodeError):
                self.reasons[item.reason] += 1
                self.details.append(str(item))
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    def has(self, ids: set[str]) -> Callable[[], bool]:
        return lambda: ids <= self.ids.keys()

    def assert_once(self, ids: set[str]) -> None:
        assert set(self.ids) == ids
        assert max(self.ids.values()) == 1, [i for i, n in self.ids.items() if n > 1][:5]


async def settle(source: TrailDirSource | TrailS3Source) -> None:
    """Two more polls: any re-read would have happened by then."""
    await asyncio.wait_for(source.next_poll(), 20)
    await asyncio.wait_for(source.next_poll(), 20)


def cursor_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


def phases() -> tuple[list[Path], list[Path], list[Path]]:
    """First batch, files added while running, files added while stopped.

    The last batch includes one file (`late`) from the same five minutes as files already
    done: CloudTrail can deliver a name that sorts before one already seen.
    """
    files = invictus()
    first, live, rest = files[:30], files[30:45], files[45:]
    late = live.pop(-3)
    return first, live, [late, *rest]


# --- the directory watcher -------------------------------------------------------------


async def test_dir_every_record_arrives_once_across_live_files_and_restart(tmp_path: Path):
    root, day = tmp_path / "logs", tmp_path / "logs" / DAY_DIR
    cursor = tmp_path / "data" / "cursors" / "trail-dir.json"
    first, live, later = phases()
    place(day, first)
    col = Collector()

    src = TrailDirSource(root, col, cursor, poll_interval=0.05)
    await src.start()
    try:
        await col.until(col.has(ids_of(first)))
        place(day, live)
        await col.until(col.has(ids_of(first + live)))
        await settle(src)
        status = src.status()
    finally:
        await src.stop()
    col.assert_once(ids_of(first + live))
    assert status["state"] == "running"
    assert status["files_done"] == len(first) + len(live)
    assert status["pending_files"] == 0

    place(day, later)  # delivered while Driftline was down
    again = TrailDirSource(root, col, cursor, poll_interval=0.05)
    await again.start()
    try:
        await col.until(col.has(ids_of(invictus())))
        await settle(again)
    finally:
        await again.stop()

    col.assert_once(ids_of(invictus()))
    assert sum(col.ids.values()) == 2900
    assert not col.reasons
    assert again.status()["files_done"] == len(later)
    assert again.status()["state"] == "stopped"
    # The cursor stays small: a mark plus the last quarter hour of names, not every file.
    (stream,) = cursor_doc(cursor)["streams"].values()
    assert stream["mark"].startswith(DAY + "/")
    assert 0 < len(stream["done"]) < 20


@pytest.mark.parametrize("gz", [True, False], ids=["json.gz", "json"])
async def test_dir_half_written_file_is_retried_not_marked_done(tmp_path: Path, gz: bool):
    root, day = tmp_path / "logs", tmp_path / "logs" / DAY_DIR
    files = invictus()
    target = next(f for f in files[5:] if gzipped(f) == gz)
    neighbours = [files[0], files[20], files[-1]]  # files[20] is settled past the target
    place(day, neighbours)
    name, data = payload(target)
    (day / name).write_bytes(data[: len(data) // 2])
    col = Collector()
    src = TrailDirSource(root, col, tmp_path / "cursor.json", poll_interval=60)

    await src.poll_once()
    await src.poll_once()
    col.assert_once(ids_of(neighbours))
    assert src.status()["retrying_files"] == 1
    assert not col.reasons

    (day / name).write_bytes(data)
    await src.poll_once()
    col.assert_once(ids_of([*neighbours, target]))
    assert not col.reasons
    assert src.status()["retrying_files"] == 0
    assert src.status()["files_rejected"] == 0


async def test_dir_corrupt_files_are_rejected_with_a_reason_and_neighbours_arrive(
    tmp_path: Path,
):
    root, day = tmp_path / "logs", tmp_path / "logs" / DAY_DIR
    cursor = tmp_path / "cursor.json"
    files = invictus()
    neighbours = [files[0], files[1], files[2]]
    place(day, neighbours)
    stem = f"{ACCOUNT}_CloudTrail_us-east-1_20230710T1145Z_"
    (day / f"{stem}zzBadGzip01.json.gz").write_bytes(b"\x1f\x8bthis is not deflate data")
    (day / f"{stem}zzBadJson02.json").write_bytes(b'{"Records": [{"eventName": ')
    whole = gzip.compress(files[3].read_bytes())
    (day / f"{stem}zzCutGzip03.json.gz").write_bytes(whole[: len(whole) // 3])
    col = Collector()
    src = TrailDirSource(root, col, cursor, poll_interval=60, incomplete_grace=0)

    await src.poll_once()  # first sight: it could still be being written
    col.assert_once(ids_of(neighbours))
    assert not col.reasons
    await src.poll_once()  # unchanged since: corrupt
    assert col.reasons == {"bad gzip": 1, "bad JSON": 1, "truncated gzip": 1}
    assert all(stem in d for d in col.details)
    status = src.status()
    assert status["files_rejected"] == 3
    assert status["files_done"] == 3
    assert status["reasons"] == {"bad gzip": 1, "bad JSON": 1, "truncated gzip": 1}

    await src.poll_once()
    again = TrailDirSource(root, col, cursor, poll_interval=60, incomplete_grace=0)
    await again.poll_once()
    await again.poll_once()
    assert col.reasons == {"bad gzip": 1, "bad JSON": 1, "truncated gzip": 1}
    col.assert_once(ids_of(neighbours))


async def test_dir_file_is_read_again_when_on_items_fails(tmp_path: Path):
    root, day = tmp_path / "logs", tmp_path / "logs" / DAY_DIR
    files = invictus()[:4]
    place(day, files)
    col = Collector()
    col.fail = 1
    src = TrailDirSource(root, col, tmp_path / "cursor.json", poll_interval=0.05)
    await src.start()
    try:
        await col.until(col.has(ids_of(files)))
        await settle(src)
        status = src.status()
    finally:
        await src.stop()
    col.assert_once(ids_of(files))
    assert status["last_error"] is not None and "store unavailable" in status["last_error"]
    assert status["state"] == "running"  # recovered on the next poll


async def test_dir_since_skips_older_days_and_digests_and_other_files(tmp_path: Path):
    root = tmp_path / "logs"
    files = invictus()
    trail = root / f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1"
    place(trail / "2023/07/09", files[:2])
    place(trail / DAY, files[2:5])
    digest = root / f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/us-east-1/{DAY}"
    digest.mkdir(parents=True)
    (
        digest / f"{ACCOUNT}_CloudTrail-Digest_us-east-1_t_us-east-1_20230710T1200Z.json.gz"
    ).write_bytes(gzip.compress(b'{"awsAccountId": "218007301253", "logFiles": []}'))
    (trail / DAY / "notes.txt").write_text("not a log file")
    col = Collector()
    src = TrailDirSource(root, col, tmp_path / "cursor.json", poll_interval=60, since="2023-07-10")
    assert await src.poll_once() == 3
    col.assert_once(ids_of(files[2:5]))
    assert not col.reasons
    assert src.status()["files_done"] == 3


async def test_dir_flat_folder_with_a_custom_pattern(tmp_path: Path):
    drop = tmp_path / "drop"
    files = invictus()[:3]
    place(drop, files)
    col = Collector()
    # The cursor may live in the watched folder: it matches the pattern but is not a log.
    src = TrailDirSource(drop, col, drop / "cursor.json", poll_interval=60, pattern=r"\.json$")
    await src.poll_once()
    await src.poll_once()
    col.assert_once(ids_of([f for f in files if not gzipped(f)]))
    assert not col.reasons
    assert list(cursor_doc(drop / "cursor.json")["streams"]) == ["."]


async def test_dir_cursor_of_another_source_or_damaged_is_refused(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cursor = tmp_path / "cursor.json"
    place(tmp_path / "a" / DAY_DIR, invictus()[:1])
    col = Collector()
    await TrailDirSource(tmp_path / "a", col, cursor, poll_interval=60).poll_once()
    other = TrailDirSource(tmp_path / "b", col, cursor, poll_interval=60)
    with pytest.raises(CursorError, match="belongs to dir:"):
        await other.start()
    cursor.write_bytes(b"{not json")
    with pytest.raises(CursorError, match="not a trail cursor"):
        await TrailDirSource(tmp_path / "a", col, cursor, poll_interval=60).start()
    with pytest.raises(FileNotFoundError, match="not a directory"):
        await TrailDirSource(tmp_path / "nope", col, tmp_path / "c2.json", poll_interval=1).start()


# --- the cursor and decoding, without a source ------------------------------------------


def _key(minute: str, suffix: str) -> str:
    return f"{DAY}/{ACCOUNT}_CloudTrail_us-east-1_20230710T{minute}Z_{suffix}.json.gz"


def test_cursor_folds_settled_keys_and_keeps_recent_ones(tmp_path: Path):
    c = TrailCursor(tmp_path / "c.json", "test", settle_seconds=900)
    for minute in ("1145", "1150", "1200", "1210", "1220"):
        c.record("s", _key(minute, "a"), None)
    # 12:20 is newest: up to 12:05 is settled and folds into the mark.
    assert c.streams["s"].mark == _key("1200", "a")
    assert c.streams["s"].done == [_key(m, "a") for m in ("1210", "1220")]
    assert c.is_done("s", _key("1145", "zzz"))  # below the mark
    assert not c.is_done("s", _key("1210", "0late"))  # a late file in a recent minute is seen
    c.save()
    loaded = TrailCursor(tmp_path / "c.json", "test", settle_seconds=900)
    loaded.load()
    assert loaded.streams == c.streams


def test_cursor_never_folds_past_a_pending_key():
    c = TrailCursor(Path("unused"), "test", settle_seconds=900)
    pending = _key("1150", "p")
    for minute in ("1145", "1155", "1230", "1300"):
        c.record("s", _key(minute, "a"), pending)
    assert c.streams["s"].mark == _key("1145", "a")
    assert not c.is_done("s", pending)
    c.record("s", pending, None)
    assert c.streams["s"].mark == _key("1230", "a")


@pytest.mark.parametrize("max_recent", [1, 3, 10])
def test_cursor_bounds_names_without_a_time(max_recent: int):
    c = TrailCursor(Path("unused"), "test", max_recent=max_recent)
    for n in range(25):
        c.record("drop", f"file-{n:03d}.json", None)
    assert len(c.streams["drop"].done) == max_recent
    assert c.streams["drop"].mark == f"file-{24 - max_recent:03d}.json"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xff\xff", "bad gzip"),
        (b"\x1f\x8b\x08\x00garbage", "truncated gzip"),
        (gzip.compress(b'{"Records": []}')[:-6], "truncated gzip"),
        (gzip.compress(b'{"Records": []}') + b"trailing", "bad gzip"),
        (gzip.compress(b" " * 5000), "file too large"),
        (b'{"Records": [', "bad JSON"),
    ],
)
def test_decode_file_names_what_is_wrong(data: bytes, reason: str):
    items, error = decode_file(data, "f.json.gz", 4096)
    assert error is not None and error.reason == reason
    assert [i.reason for i in items if isinstance(i, DecodeError)] == [reason]


def test_decode_file_reads_concatenated_gzip_members():
    data = invictus()[0].read_bytes()
    half = len(data) // 2
    items, error = decode_file(
        gzip.compress(data[:half]) + gzip.compress(data[half:]), "two.json.gz", 1 << 24
    )
    assert error is None
    assert {i.event_id for i in items if isinstance(i, ChangeEvent)} == ids_of(invictus()[:1])


# --- the S3 poller, against a real moto server -----------------------------------------


def new_bucket(endpoint: str) -> str:
    bucket = f"trail-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


def upload(endpoint: str, bucket: str, folder: str, files: list[Path]) -> None:
    client = s3_client(endpoint)
    for f in files:
        name, data = payload(f)
        client.put_object(Bucket=bucket, Key=f"{folder}/{name}", Body=data)


@pytest.mark.integration  # a real moto S3 server
async def test_s3_every_record_arrives_once_across_live_uploads_and_restart(
    tmp_path: Path, s3_endpoint: str, aws_env: None, caplog: pytest.LogCaptureFixture
):
    bucket = new_bucket(s3_endpoint)
    trail = f"org-trail/AWSLogs/{ORG}/{ACCOUNT}/CloudTrail"
    east, west = f"{trail}/us-east-1/{DAY}", f"{trail}/eu-west-1/{DAY}"
    cursor = tmp_path / "data" / "cursors" / "trail-s3.json"
    first, live, later = phases()
    await asyncio.to_thread(upload, s3_endpoint, bucket, west, first[:6])
    await asyncio.to_thread(upload, s3_endpoint, bucket, east, first[6:])
    client = s3_client(s3_endpoint)
    # Neither of these is an event log: both must be skipped, not rejected.
    client.put_object(
        Bucket=bucket,
        Key=f"org-trail/AWSLogs/{ORG}/{ACCOUNT}/CloudTrail-Digest/us-east-1/{DAY}/d.json.gz",
        Body=gzip.compress(b'{"logFiles": []}'),
    )
    client.put_object(Bucket=bucket, Key="org-trail/README.txt", Body=b"hello")
    col = Collector()

    def source() -> TrailS3Source:
        return TrailS3Source(
            bucket,
            "org-trail",
            col,
            cursor,
            poll_interval=0.05,
            endpoint_url=s3_endpoint,
            discover_interval=0,
        )

    src = source()
    await src.start()
    try:
        await col.until(col.has(ids_of(first)))
        await asyncio.to_thread(upload, s3_endpoint, bucket, east, live)
        await col.until(col.has(ids_of(first + live)))
        await settle(src)
    finally:
        await src.stop()
    col.assert_once(ids_of(first + live))

    await asyncio.to_thread(upload, s3_endpoint, bucket, east, later)
    again = source()
    await again.start()
    try:
        await col.until(col.has(ids_of(invictus())))
        await settle(again)
        status = again.status()
    finally:
        await again.stop()

    col.assert_once(ids_of(invictus()))
    assert not col.reasons
    assert status["files_done"] == len(later)
    assert status["streams"] == 2
    assert status["source"] == f"s3://{bucket}/org-trail/"
    doc = cursor_doc(cursor)
    assert set(doc["streams"]) == {f"{trail}/us-east-1/", f"{trail}/eu-west-1/"}
    assert all(len(s["done"]) < 20 for s in doc["streams"].values())
    assert SECRET not in orjson.dumps(status).decode() + caplog.text

    # A poll lists from each folder's mark: it costs what is recent, not what the bucket holds.
    counting = FlakyClient(s3_client(s3_endpoint), fail_key="never")
    third = TrailS3Source(
        bucket, "org-trail", col, cursor, poll_interval=60, client_factory=lambda: counting
    )
    assert await third.poll_once() == 0
    assert 0 < counting.listed <= sum(len(s["done"]) for s in doc["streams"].values())


class FlakyClient:
    """A real boto3 client that counts listed keys; GetObject fails once for `fail_key`."""

    def __init__(self, client: Any, fail_key: str) -> None:
        self.client = client
        self.fail_key = fail_key
        self.failed = False
        self.listed = 0

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        resp: dict[str, Any] = self.client.list_objects_v2(**kwargs)
        self.listed += len(resp.get("Contents", []))
        return resp

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        if kwargs["Key"].endswith(self.fail_key) and not self.failed:
            self.failed = True
            raise ConnectionError("connection reset by peer")
        return self.client.get_object(**kwargs)


@pytest.mark.integration  # a real moto S3 server
async def test_s3_corrupt_object_is_rejected_and_a_failed_read_is_retried(
    tmp_path: Path, s3_endpoint: str, aws_env: None
):
    bucket = new_bucket(s3_endpoint)
    folder = f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/{DAY}"
    files = invictus()[:3]
    await asyncio.to_thread(upload, s3_endpoint, bucket, folder, files)
    bad = f"{ACCOUNT}_CloudTrail_us-east-1_20230710T1145Z_zzCorrupt.json.gz"
    s3_client(s3_endpoint).put_object(
        Bucket=bucket, Key=f"{folder}/{bad}", Body=b"\x1f\x8b\x08\x00not deflate"
    )
    cursor = tmp_path / "cursor.json"
    flaky_name = payload(files[1])[0]
    col = Collector()

    def source(fail_key: str) -> TrailS3Source:
        return TrailS3Source(
            bucket,
            "",
            col,
            cursor,
            poll_interval=60,
            client_factory=lambda: FlakyClient(s3_client(s3_endpoint), fail_key),
        )

    src = source(flaky_name)
    await src.poll_once()
    col.assert_once(ids_of([files[0], files[2]]))
    # S3 objects appear whole: a corrupt one is rejected at once, not retried.
    assert col.reasons == {"bad gzip": 1}
    status = src.status()
    assert "connection reset" in status["last_error"]
    assert status["files_rejected"] == 1

    await src.poll_once()
    col.assert_once(ids_of(files))
    again = source("never")
    await again.poll_once()
    await again.poll_once()
    col.assert_once(ids_of(files))
    assert col.reasons == {"bad gzip": 1}


@pytest.mark.integration  # a real moto S3 server
async def test_s3_missing_bucket_is_reported_and_retried(
    tmp_path: Path, s3_endpoint: str, aws_env: None
):
    col = Collector()
    src = TrailS3Source(
        f"absent-{uuid.uuid4().hex[:8]}",
        "",
        col,
        tmp_path / "cursor.json",
        poll_interval=0.05,
        endpoint_url=s3_endpoint,
    )
    await src.start()
    try:
        await settle(src)
        status = src.status()
    finally:
        await src.stop()
    assert status["state"] == "degraded"
    assert "NoSuchBucket" in status["last_error"]
    assert SECRET not in status["last_error"]
    assert status["polls"] >= 2


@pytest.mark.parametrize(
    ("prefix", "start", "level"),
    [
        ("", "AWSLogs/", "root"),
        ("trails", "trails/AWSLogs/", "root"),
        ("/trails/", "trails/AWSLogs/", "root"),
        ("AWSLogs/", "AWSLogs/", "root"),
        (f"AWSLogs/{ORG}", f"AWSLogs/{ORG}/", "org"),
        (f"x/AWSLogs/{ACCOUNT}/", f"x/AWSLogs/{ACCOUNT}/", "account"),
        (f"AWSLogs/{ACCOUNT}/CloudTrail/", f"AWSLogs/{ACCOUNT}/CloudTrail/", "trail"),
        (
            f"AWSLogs/{ORG}/{ACCOUNT}/CloudTrail/us-gov-west-1",
            f"AWSLogs/{ORG}/{ACCOUNT}/CloudTrail/us-gov-west-1/",
            "stream",
        ),
    ],
)
def test_s3_prefix_levels(prefix: str, start: str, level: str):
    assert parse_prefix(prefix)[1:] == (start, level)


@pytest.mark.parametrize(
    "prefix",
    [
        f"AWSLogs/{ACCOUNT}/CloudTrail-Digest/",
        f"AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/2023/",
        "AWSLogs/not-an-account/",
    ],
)
def test_s3_prefix_below_a_region_or_outside_the_layout_is_refused(prefix: str):
    with pytest.raises(ValueError, match="trail_s3_prefix"):
        parse_prefix(prefix)


def test_sources_are_idle_until_started(tmp_path: Path):
    col = Collector()
    src = TrailDirSource(tmp_path, col, tmp_path / "c.json", poll_interval=1)
    assert src.status()["state"] == "stopped"
    assert src.status()["polls"] == 0
    assert not (tmp_path / "c.json").exists()
    with pytest.raises(ValueError, match="poll_interval"):
        TrailDirSource(tmp_path, col, tmp_path / "c.json", poll_interval=0)
    with pytest.raises(ValueError, match="since"):
        TrailDirSource(tmp_path, col, tmp_path / "c.json", poll_interval=1, since="July")
