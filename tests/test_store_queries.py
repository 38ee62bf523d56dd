"""SqliteStore.drifts' fast read paths (counters, per-block facet counts, covering indexes,
paging from the nearer end) return exactly what plain SQL returns, and the counts stay exact
through status changes and pruning; a schema-3 store migrates."""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.actors import Actor
from monitor.lifecycle import drift_type
from monitor.store import (
    DriftFilter,
    Retention,
    SqliteStore,
    StatusChange,
    StoreSettings,
    WriteBatch,
    WriteOutcome,
)
from monitor.store.schema import (
    COUNTED,
    FACET_COLS,
    MIGRATIONS,
    SCHEMA_VERSION,
    rebuild_counters,
)
from monitor.types import Drift, DriftKind

pytestmark = pytest.mark.timeout(300)

TOTAL = 24_000
BATCH = 400
END = datetime(2026, 3, 31, 12, 0, 0, tzinfo=UTC)
SPAN = timedelta(days=40)
TYPES = (
    ("aws_security_group", "network", "aws"),
    ("aws_iam_role", "iam", "aws"),
    ("aws_s3_bucket", "encryption", "aws"),
    ("aws_cloudtrail", "logging", "aws"),
    ("aws_instance", "compute", "aws"),
    ("google_compute_firewall", "network", "gcp"),
    ("azurerm_storage_account", "encryption", "azure"),
    ("kubernetes_role_binding", "iam", "kubernetes"),
)
SEVERITIES = ("critical", "high", "medium", "low")
KINDS = (DriftKind.MODIFIED, DriftKind.UNMANAGED, DriftKind.MISSING)
ACTORS = [Actor("IAMUser", f"AIDA{i}", f"arn:aws:iam::1:user/u{i}", "1", f"u{i}") for i in range(6)]
ACTORS.append(Actor("AWSService", None, None, None, "lambda.amazonaws.com"))
OPTIONS: dict[str, list[str]] = {
    "severity": [*SEVERITIES, "nope"],
    "status": ["detected", "investigating", "resolved"],
    "kind": ["modified", "unmanaged", "missing"],
    "drift_type": ["configuration", "security", "compliance"],
    "provider": ["aws", "gcp", "azure", "kubernetes", "host"],
    "resource_type": [t[0] for t in TYPES] + ["nope"],
    "actor": [a.user_name or "" for a in ACTORS] + ["nobody"],
    "resource_id": ["r-3", "r-17", "r-404"],
}


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_drift(n: int, rng: random.Random) -> Drift:
    rtype, category, provider = rng.choice(TYPES)
    kind = rng.choices(KINDS, (8, 1, 1))[0]
    # Roughly in time order, with jitter: event_time is not monotonic in n.
    when = END - SPAN + SPAN * (n / TOTAL) + timedelta(hours=rng.uniform(-30, 30))
    return Drift(
        id=f"drift-{n}",
        kind=kind,
        severity=rng.choices(SEVERITIES, (1, 4, 8, 6))[0],
        category=category,
        provider=provider,
        account_id="1",
        region="us-east-1",
        resource_type=rtype,
        resource_id=f"r-{rng.randrange(500)}",
        resource_address=f"{rtype}.r",
        field="f",
        old_value="old",
        new_value=f"new-{n}",  # distinct: no flood-control merges
        event_id=f"e-{n}",
        event_name="Change",
        event_source="x.amazonaws.com",
        event_time=iso(when),
        detected_at=iso(when + timedelta(seconds=1)),
        actor=rng.choices(ACTORS, (6, 5, 4, 3, 2, 1, 2))[0],
        source_ip=None,
        user_agent=None,
    )


@dataclass
class Built:
    store: SqliteStore
    path: Path
    end: datetime


def _build(path: Path, settings: StoreSettings) -> SqliteStore:
    """TOTAL drifts through write(): status changes a few batches later, and pruning."""
    store = SqliteStore(path, settings)
    store.start()
    rng = random.Random(5)
    pending: dict[int, list[StatusChange]] = {}
    batches = TOTAL // BATCH
    for b in range(batches):
        drifts = [make_drift(n, rng) for n in range(b * BATCH, (b + 1) * BATCH)]
        for d in drifts:
            r = rng.random()
            later = b + rng.randint(0, 4)
            if r < 0.15:
                pending.setdefault(later, []).append(StatusChange(d.id, "investigating"))
                pending.setdefault(later + 2, []).append(StatusChange(d.id, "resolved"))
            elif r < 0.35:
                pending.setdefault(later, []).append(StatusChange(d.id, "resolved"))
        retention = None
        if b % 15 == 14:  # oldest resolved (then oldest) beyond a cap, and old resolved ones
            retention = Retention(
                drift_max_rows=(b + 1) * BATCH - 700,
                resolved_max_age=iso(END - SPAN + timedelta(days=b // 10)),
                chunk=600,
            )
        store.write(
            [
                WriteBatch(
                    drifts=drifts,
                    status_changes=pending.pop(b, []),
                    retention=retention,
                    received_at=iso(END - SPAN + timedelta(days=b // 10)),
                )
            ]
        )
    return store


@pytest.fixture(
    scope="module",
    params=[(14, 20_000), (6, 300)],
    ids=["blocks-16384", "blocks-64-deep-300"],
)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    # Small blocks put many block boundaries inside the data set (and inside pages); a low
    # deep-offset bar sends unfiltered pages past it through the block counts.
    bits, deep = request.param
    settings = StoreSettings(synchronous="OFF", block_bits=bits, deep_offset=deep)
    path = tmp_path_factory.mktemp("queries") / "driftline.db"
    store = _build(path, settings)
    try:
        yield Built(store, path, END)
    finally:
        store.close()


def _plain(path: Path, f: DriftFilter) -> list[str]:
    """The oracle: every matching id, newest first, by a plain scan."""
    clauses, args = [], []
    for col in ("severity", "status", "kind", "drift_type", "provider", "resource_type"):
        if getattr(f, col) is not None:
            clauses.append(f"{col} = ?")
            args.append(getattr(f, col))
    for col in ("actor", "resource_id"):
        if getattr(f, col) is not None:
            clauses.append(f"{col} = ?")
            args.append(getattr(f, col))
    if f.since:
        clauses.append("event_time >= ?")
        args.append(f.since)
    if f.until:
        clauses.append("event_time <= ?")
        args.append(f.until)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [
            r[0]
            for r in db.execute(f"SELECT id FROM drifts NOT INDEXED{where} ORDER BY n DESC", args)
        ]
    finally:
        db.close()


def _check(built: Built, f: DriftFilter, limit: int, pages: set[int] | None = None) -> int:
    expected = _plain(built.path, f)
    last = max(1, -(-len(expected) // limit))
    mid = max(1, last // 2)
    for page in pages or {1, 2, mid, mid + 1, last - 1, last, last + 1}:
        if page < 1:
            continue
        items, total = built.store.drifts(f, page, limit)
        assert total == len(expected), (f, limit, page)
        want = expected[(page - 1) * limit : page * limit]
        assert [d["id"] for d in items] == want, (f, limit, page)
    return len(expected)


def _window(end: datetime, days_back: float, days: float | None) -> tuple[str, str | None]:
    since = end - timedelta(days=days_back)
    return iso(since), (iso(since + timedelta(days=days)) if days is not None else None)


def test_single_filters_every_value(built: Built) -> None:
    assert _check(built, DriftFilter(), 50) > 10_000
    for col, values in OPTIONS.items():
        for value in values:
            _check(built, DriftFilter(**{col: value}), 50)


def test_combined_filters(built: Built) -> None:
    matched = 0
    for a, b in itertools.combinations(("severity", "status", "kind", "provider", "actor"), 2):
        for va in OPTIONS[a][:3]:
            for vb in OPTIONS[b][:3]:
                matched += _check(built, DriftFilter(**{a: va, b: vb}), 37) > 0
    assert matched > 50  # most combinations match something: the pages are real pages
    _check(
        built, DriftFilter(severity="medium", status="resolved", resource_type="aws_iam_role"), 7
    )
    _check(built, DriftFilter(status="detected", kind="modified", drift_type="security"), 200)


def test_time_windows(built: Built) -> None:
    end = built.end
    for back, days in (
        (1, None),
        (0.3, 0.1),
        (20.5, 1),
        (30, 30),
        (45, None),
        (39.9, 0.5),
        (50, 5),
    ):
        since, until = _window(end, back, days)
        _check(built, DriftFilter(since=since, until=until), 50)
        _check(built, DriftFilter(since=since, until=until, severity="critical"), 20)
        _check(built, DriftFilter(since=since, until=until, status="resolved", kind="modified"), 50)
        _check(built, DriftFilter(since=since, until=until, actor="u0"), 50)
    _check(built, DriftFilter(until=iso(end - timedelta(days=25))), 50)
    _check(built, DriftFilter(until=iso(end - timedelta(days=25)), provider="gcp"), 50)
    day = iso(end - timedelta(days=10))[:10]  # whole days, date-only bounds
    _check(built, DriftFilter(since=day, until=day + "T23:59:59Z"), 50)
    _check(built, DriftFilter(since=day, status="investigating"), 50)


def test_deep_and_last_pages(built: Built) -> None:
    for f in (
        DriftFilter(),
        DriftFilter(status="resolved"),
        DriftFilter(actor="u0"),
        DriftFilter(severity="medium", resource_type="aws_security_group"),
        DriftFilter(since=iso(built.end - timedelta(days=30))),
    ):
        total = len(_plain(built.path, f))
        for limit in (1, 50, 1000):
            last = max(1, -(-total // limit))
            _check(
                built, f, limit, {1, last // 3, last // 2, last * 2 // 3, last - 1, last, last + 1}
            )


@pytest.mark.integration  # the slow tier: 2 x 250 random filters against a full scan
def test_random_filters_match_plain_sql(built: Built) -> None:
    rng = random.Random(9)
    for _ in range(250):
        kw: dict[str, Any] = {}
        for k in rng.sample(list(OPTIONS), rng.choice([1, 2, 2, 3, 3, 4])):
            kw[k] = rng.choice(OPTIONS[k])
        r = rng.random()
        if r < 0.5:
            since, until = _window(
                built.end, rng.uniform(0, 42), rng.choice([None, 0.01, 0.5, 1, 3, 20])
            )
            kw["since"] = since
            if until is not None:
                kw["until"] = until
        elif r < 0.6:
            kw["until"] = iso(built.end - timedelta(days=rng.uniform(0, 42)))
        f = DriftFilter(**kw)
        limit = rng.choice([1, 7, 50, 200])
        total = len(_plain(built.path, f))
        last = max(1, -(-total // limit))
        _check(built, f, limit, {1, last, rng.randint(1, last), last + 1})


def _assert_counts_exact(path: Path, bits: int) -> None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counters = dict(db.execute("SELECT name, value FROM counters"))
        total = db.execute("SELECT COUNT(*) FROM drifts").fetchone()[0]
        assert counters["drifts.total"] == total
        for col in COUNTED:
            for value, count in db.execute(f"SELECT {col}, COUNT(*) FROM drifts GROUP BY 1"):
                assert counters.get(f"drifts.{col}.{value}") == count, (col, value)
            kept = {k: v for k, v in counters.items() if k.startswith(f"drifts.{col}.") and v}
            assert sum(kept.values()) == total, col
        # Every drift's facet says what its columns say.
        cols = ", ".join(f"f.{c}" for c in FACET_COLS)
        raw = ", ".join(
            f"IFNULL(d.{c}, '')" if c in ("provider", "resource_type") else f"d.{c}"
            for c in FACET_COLS
        )
        wrong = db.execute(
            f"SELECT COUNT(*) FROM drifts d LEFT JOIN facets f ON f.id = d.facet "
            f"WHERE f.id IS NULL OR ({cols}) IS NOT ({raw})"
        ).fetchone()[0]
        assert wrong == 0
        stored = set(db.execute("SELECT facet, block, day, count FROM facet_counts"))
        actual = set(
            db.execute(
                f"SELECT facet, n >> {bits}, substr(event_time, 1, 10), COUNT(*) "
                "FROM drifts GROUP BY 1, 2, 3"
            )
        )
        assert stored == actual  # exact, and no emptied (zero) cells left behind
        days = set(db.execute("SELECT block, day, count FROM day_counts"))
        assert days == set(
            db.execute(
                f"SELECT n >> {bits}, substr(event_time, 1, 10), COUNT(*) FROM drifts GROUP BY 1, 2"
            )
        )
    finally:
        db.close()


def test_counters_exact_after_status_changes_and_pruning(built: Built) -> None:
    db = sqlite3.connect(f"file:{built.path}?mode=ro", uri=True)
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM drifts GROUP BY 1"))
    max_n = db.execute("SELECT MAX(n) FROM drifts").fetchone()[0]
    total = db.execute("SELECT COUNT(*) FROM drifts").fetchone()[0]
    db.close()
    # The build moved and pruned: every status is present and rows are gone.
    assert set(statuses) == {"detected", "investigating", "resolved"}
    assert total < max_n == TOTAL
    _assert_counts_exact(built.path, built.store.settings.block_bits)


def test_status_change_and_prune_keep_counts_exact(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "small.db")
    store.start()
    rng = random.Random(3)
    try:
        drifts = [make_drift(n, rng) for n in range(300)]
        store.write([WriteBatch(drifts=drifts, received_at="2026-03-01T00:00:00Z")])
        changes = [StatusChange(d.id, "investigating") for d in drifts[:100]]
        changes += [StatusChange(d.id, "resolved") for d in drifts[50:150]]
        changes.append(StatusChange("drift-missing", "resolved"))  # refused: not found
        out = store.write([WriteBatch(status_changes=changes, received_at="2026-03-02T00:00:00Z")])[
            0
        ]
        assert sum(isinstance(r, dict) for r in out.status_results) == 200
        _assert_counts_exact(Path(store.path), 14)
        _check(Built(store, Path(store.path), END), DriftFilter(status="investigating"), 7)
        _check(
            Built(store, Path(store.path), END), DriftFilter(status="resolved", severity="low"), 7
        )
        out = store.write(
            [
                WriteBatch(
                    retention=Retention(drift_max_rows=120), received_at="2026-03-03T00:00:00Z"
                )
            ]
        )[0]
        assert out.pruned["drifts"] == 180
        _assert_counts_exact(Path(store.path), 14)
        assert store.summary()["by_status"]["resolved"] == 0  # resolved ones go first
        _check(
            Built(store, Path(store.path), END), DriftFilter(status="detected", kind="modified"), 7
        )
    finally:
        store.close()


def test_failed_write_forgets_its_facets(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "rb.db")
    store.start()
    rng = random.Random(4)
    a, b, c = (
        replace(make_drift(n, rng), severity="low", resource_type=rtype)
        for n, rtype in ((0, "type_a"), (1, "type_b"), (2, "type_c"))
    )

    def unavailable(batches: object, outcomes: list[WriteOutcome]) -> list[list[object]]:
        assert outcomes[0].new_drifts == {b.id}  # the statements ran, then this fails
        raise RuntimeError("sequence unavailable")

    try:
        store.write([WriteBatch(drifts=[a], received_at="t")])
        failing = WriteBatch(drifts=[b], received_at="t")
        with pytest.raises(RuntimeError, match="sequence unavailable"):
            store.write([failing], unavailable)  # rolled back after b's facet row went in
        # c's new facet takes the id b's rolled-back one had; b must not reuse a stale id.
        store.write([WriteBatch(drifts=[c], received_at="t")])
        store.write([WriteBatch(drifts=[b], received_at="t")])
        _assert_counts_exact(Path(store.path), 14)
        for d in (a, b, c):
            items, total = store.drifts(
                DriftFilter(severity="low", resource_type=d.resource_type), 1, 9
            )
            assert total == 1 and [x["id"] for x in items] == [d.id]
    finally:
        store.close()


def test_checkpointer_runs_with_the_store_and_stops_with_it(tmp_path: Path) -> None:
    # Its lifecycle and settings; the checkpoints themselves are SQLite's.
    store = SqliteStore(tmp_path / "ckpt.db")
    assert store._checkpointer is None  # nothing runs before start()
    store.start()
    thread = store._checkpointer
    assert thread is not None and thread.is_alive()
    assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL still
    store.write([WriteBatch(drifts=[make_drift(1, random.Random(1))], received_at="t")])
    store.drifts(DriftFilter(severity="nope", status="resolved"), 1, 10)
    assert not store._reader().in_transaction  # the read transaction ended
    store.close()
    assert not thread.is_alive()
    memory = SqliteStore(":memory:")
    memory.start()
    assert memory._checkpointer is None
    memory.close()


def test_migration_from_schema_3(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path)
    db.executescript(";".join(MIGRATIONS[v] for v in (1, 2, 3)) + ";PRAGMA user_version=3;")
    rng = random.Random(8)
    drifts = [make_drift(n, rng) for n in range(40)]
    for n, d in enumerate(drifts):
        status = ("detected", "investigating", "resolved")[n % 3]
        db.execute(
            "INSERT INTO drifts (id, event_id, kind, severity, category, provider, resource_type,"
            " resource_id, resource_address, field, actor, status, event_time, detected_at, body,"
            " last_seen, updated_at, dedup_key, drift_type) VALUES"
            " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                d.id,
                d.event_id,
                d.kind.value,
                d.severity,
                d.category,
                d.provider,
                d.resource_type,
                d.resource_id,
                d.resource_address,
                d.field,
                d.actor.user_name,
                status,
                d.event_time,
                d.detected_at,
                orjson.dumps(d.as_dict()),
                d.event_time,
                d.detected_at,
                f"k{n}",
                drift_type(d.category),
            ),
        )
    db.execute(
        'INSERT INTO dead_letters (source, topic, partition, "offset", value_size, reason, at)'
        " VALUES ('kafka', 't', 0, 1, 0, 'bad', 'now')"
    )
    rebuild_counters(db)
    db.execute("DELETE FROM counters WHERE name LIKE 'drifts.actor.%'")  # schema 3 had none
    db.execute("INSERT INTO counters VALUES ('drifts.merged', 5)")
    db.commit()
    db.close()
    store = SqliteStore(path)  # migration 4 counts blocks of 2**14: the default block_bits
    store.start()
    try:
        assert store._writer.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.dead_letters(1, 10)[1] == 1
        assert store.counters()["drifts.merged"] == 5  # other counters survive
        assert store.counters()["drifts.actor.u0"] == sum(d.actor.user_name == "u0" for d in drifts)
        _assert_counts_exact(path, 14)
        built = Built(store, path, END)
        for f in (
            DriftFilter(),
            DriftFilter(status="resolved"),
            DriftFilter(status="detected", severity="medium"),
            DriftFilter(actor="u1"),
            DriftFilter(since=drifts[10].event_time, until=drifts[30].event_time),
        ):
            _check(built, f, 3)
        # The writer's facet cache came from the migrated table: moves keep counts exact.
        store.write(
            [WriteBatch(status_changes=[StatusChange(drifts[0].id, "resolved")], received_at="t")]
        )
        store.write([WriteBatch(drifts=[make_drift(99, rng)], received_at="t")])
        _assert_counts_exact(path, 14)
        _check(built, DriftFilter(status="resolved", provider="aws"), 2)
    finally:
        store.close()


@pytest.mark.integration  # the slow tier: hundreds of real commits and checkpoints on disk
def test_the_wal_starts_over_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    """SQLite starts the WAL over only when a write begins after all of it was copied back;
    back-to-back commits never leave the checkpointer that moment, so the writer finishes the
    copy itself once the WAL is too big (without it, the WAL held every commit of the run)."""
    limit = 256 * 1024
    rng = random.Random(11)
    batches = [
        WriteBatch(
            drifts=[make_drift(n, rng) for n in range(b * 40, (b + 1) * 40)], received_at="t"
        )
        for b in range(300)
    ]
    store = SqliteStore(
        tmp_path / "wal.db", StoreSettings(wal_size_limit=limit, checkpoint_interval=0.02)
    )
    store.start()
    wal = tmp_path / "wal.db-wal"
    sizes = []
    try:
        for batch in batches:  # back to back, as under a loaded consumer
            store.write([batch])
            sizes.append(wal.stat().st_size)
    finally:
        store.close()
    database = (tmp_path / "wal.db").stat().st_size
    assert database > 8 * limit, "enough was written for an unbounded WAL to show"
    # Each commit rewrites the pages it touches; a WAL that never starts over holds all of
    # them, ten times the database here. Started over, it stays well below the database.
    assert max(sizes) < database, (max(sizes), database)
