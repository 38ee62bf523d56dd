"""The SQLite schema: its migrations, the counted columns and facets, and the counter rebuild."""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 8
# Single-column filters whose totals are kept as counters (COUNT(*) over a million rows is
# too slow for a page request).
COUNTED = ("severity", "status", "kind", "drift_type", "provider", "resource_type", "actor")
# A drift's facet: its combination of these (a few hundred distinct), counted per block of
# drift numbers and per event day so multi-filter totals and deep pages need no row scan.
FACET_COLS = ("severity", "status", "kind", "drift_type", "provider", "resource_type")

# Migration 4 counts blocks of 2**14 drift numbers (StoreSettings.block_bits' default).
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE events (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, time TEXT NOT NULL, received_at TEXT NOT NULL,
        provider TEXT, severity TEXT, name TEXT, source TEXT, actor TEXT, body BLOB NOT NULL
    );
    CREATE INDEX events_time ON events(time);
    CREATE INDEX events_kind_sev ON events(severity, provider);
    CREATE TABLE drifts (
        n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, event_id TEXT NOT NULL,
        kind TEXT NOT NULL, severity TEXT NOT NULL, category TEXT, provider TEXT,
        resource_type TEXT, resource_id TEXT, resource_address TEXT, field TEXT, actor TEXT,
        status TEXT NOT NULL, event_time TEXT NOT NULL, detected_at TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX drifts_severity ON drifts(severity, n);
    CREATE INDEX drifts_type ON drifts(resource_type, n);
    CREATE INDEX drifts_status ON drifts(status, n);
    CREATE INDEX drifts_kind ON drifts(kind, n);
    CREATE INDEX drifts_resource ON drifts(resource_id, n);
    CREATE INDEX drifts_event ON drifts(event_id);
    CREATE INDEX drifts_time ON drifts(event_time);
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, type TEXT NOT NULL, ts TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)
    """,
    2: """
    ALTER TABLE drifts ADD COLUMN occurrences INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE drifts ADD COLUMN last_seen TEXT;
    ALTER TABLE drifts ADD COLUMN updated_at TEXT;
    ALTER TABLE drifts ADD COLUMN dedup_key TEXT;
    ALTER TABLE drifts ADD COLUMN drift_type TEXT NOT NULL DEFAULT 'configuration';
    UPDATE drifts SET last_seen = event_time, updated_at = detected_at,
        drift_type = CASE WHEN category IN ('iam', 'network', 'encryption') THEN 'security'
                          WHEN category IN ('logging', 'monitoring') THEN 'compliance'
                          ELSE 'configuration' END;
    CREATE INDEX drifts_open ON drifts(dedup_key, status);
    CREATE INDEX drifts_drift_type ON drifts(drift_type, n);
    CREATE INDEX drifts_provider ON drifts(provider, n);
    CREATE INDEX drifts_actor ON drifts(actor, n);
    CREATE INDEX drifts_detected ON drifts(detected_at);
    CREATE INDEX drifts_keys ON drifts(n);
    CREATE TABLE occurrences (
        drift_id TEXT PRIMARY KEY, parent TEXT NOT NULL, event_id TEXT NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE INDEX occurrences_parent ON occurrences(parent);
    CREATE TABLE baselines (
        key TEXT PRIMARY KEY, value BLOB NOT NULL, state_value BLOB NOT NULL,
        drift_id TEXT NOT NULL, captured_at TEXT NOT NULL
    );
    CREATE TABLE history (
        drift_id TEXT NOT NULL, at TEXT NOT NULL, from_status TEXT, to_status TEXT NOT NULL,
        note TEXT
    );
    CREATE INDEX history_drift ON history(drift_id);
    CREATE INDEX events_received ON events(received_at)
    """,
    3: """
    CREATE TABLE dead_letters (
        n INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, topic TEXT NOT NULL,
        partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, key BLOB, value BLOB,
        value_size INTEGER NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL,
        UNIQUE (source, topic, partition, "offset")
    )
    """,
    4: """
    CREATE TABLE facets (
        id INTEGER PRIMARY KEY, severity TEXT NOT NULL, status TEXT NOT NULL,
        kind TEXT NOT NULL, drift_type TEXT NOT NULL, provider TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        UNIQUE (severity, status, kind, drift_type, provider, resource_type)
    );
    INSERT INTO facets (severity, status, kind, drift_type, provider, resource_type)
        SELECT DISTINCT severity, status, kind, drift_type, IFNULL(provider, ''),
            IFNULL(resource_type, '') FROM drifts;
    ALTER TABLE drifts ADD COLUMN facet INTEGER;
    UPDATE drifts SET facet = (SELECT id FROM facets f WHERE f.severity = drifts.severity
        AND f.status = drifts.status AND f.kind = drifts.kind
        AND f.drift_type = drifts.drift_type AND f.provider = IFNULL(drifts.provider, '')
        AND f.resource_type = IFNULL(drifts.resource_type, ''));
    CREATE TABLE facet_counts (
        facet INTEGER NOT NULL, block INTEGER NOT NULL, day TEXT NOT NULL,
        count INTEGER NOT NULL, PRIMARY KEY (facet, block, day)
    ) WITHOUT ROWID;
    INSERT INTO facet_counts SELECT facet, n >> 14, substr(event_time, 1, 10), COUNT(*)
        FROM drifts GROUP BY 1, 2, 3;
    CREATE TABLE day_counts (
        block INTEGER NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (block, day)
    ) WITHOUT ROWID;
    INSERT INTO day_counts SELECT n >> 14, substr(event_time, 1, 10), COUNT(*)
        FROM drifts GROUP BY 1, 2;
    CREATE INDEX drifts_scan ON drifts(n, facet, actor, event_time);
    DROP INDEX drifts_time;
    CREATE INDEX drifts_time ON drifts(event_time, facet, actor);
    DROP INDEX drifts_actor;
    CREATE INDEX drifts_actor ON drifts(actor, n, facet, event_time);
    DELETE FROM counters WHERE name LIKE 'drifts.actor.%';
    INSERT INTO counters SELECT 'drifts.actor.' || actor, COUNT(*) FROM drifts
        WHERE actor IS NOT NULL GROUP BY actor
    """,
    5: """
    ALTER TABLE history ADD COLUMN actor TEXT
    """,
    # Every actor of a drift: each repeat records who made it, the drift lists them (bounded).
    # Bodies are kept as BLOBs, which SQLite's JSON functions would read as JSONB: cast first.
    6: """
    ALTER TABLE occurrences ADD COLUMN actor_key TEXT;
    ALTER TABLE occurrences ADD COLUMN user_name TEXT;
    ALTER TABLE occurrences ADD COLUMN arn TEXT;
    ALTER TABLE occurrences ADD COLUMN source_ip TEXT;
    CREATE INDEX occurrences_actor ON occurrences(parent, actor_key);
    ALTER TABLE drifts ADD COLUMN actors TEXT;
    ALTER TABLE drifts ADD COLUMN actor_count INTEGER NOT NULL DEFAULT 1;
    UPDATE drifts SET actors = json_array(json_object(
        'type', json_extract(CAST(body AS TEXT), '$.actor.type'),
        'user_name', json_extract(CAST(body AS TEXT), '$.actor.user_name'),
        'arn', json_extract(CAST(body AS TEXT), '$.actor.arn'),
        'principal_id', json_extract(CAST(body AS TEXT), '$.actor.principal_id'),
        'source_ip', json_extract(CAST(body AS TEXT), '$.source_ip'),
        'first_seen', event_time))
    """,
    # Noise control: suppressions, custom and disabled rules and apply principals (a JSON
    # body per item), and the drifts a suppression held back (kept apart so the counters,
    # facets and pages of /drifts stay about what is reported).
    7: """
    CREATE TABLE noise (
        kind TEXT NOT NULL, id TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, id)
    );
    CREATE TABLE suppressed_drifts (
        n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        suppressed_by TEXT NOT NULL, event_time TEXT NOT NULL, detected_at TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX suppressed_drifts_by ON suppressed_drifts(suppressed_by, n);
    CREATE INDEX suppressed_drifts_detected ON suppressed_drifts(detected_at)
    """,
    # Outputs (forwarders) and their outbox: a delivery row per (message, matching output),
    # written in the transaction that stores the message, sent in id order per output.
    8: """
    CREATE TABLE outputs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, origin TEXT NOT NULL,
        spec BLOB NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT, output_id TEXT NOT NULL, seq INTEGER NOT NULL,
        type TEXT NOT NULL, event TEXT NOT NULL, ts TEXT NOT NULL, body BLOB NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0, last_error TEXT, created_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX deliveries_queue ON deliveries(output_id, status, id)
    """,
}


def migrate(db: sqlite3.Connection, path: str) -> None:
    """Bring the database up to SCHEMA_VERSION, one transaction per version."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"{path}: store schema {current} is newer than this Driftline "
            f"({SCHEMA_VERSION}); upgrade Driftline"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[version].split(";"):
                if stmt.strip():
                    db.execute(stmt)
            if version == 2:
                rebuild_counters(db)
            db.execute(f"PRAGMA user_version={version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def rebuild_counters(db: sqlite3.Connection) -> None:
    """Recount the drift and event counters from the rows."""
    db.execute("DELETE FROM counters WHERE name LIKE 'drifts.%' OR name LIKE 'events.%'")
    db.execute("INSERT INTO counters SELECT 'drifts.total', COUNT(*) FROM drifts")
    for col in COUNTED:
        db.execute(
            f"INSERT INTO counters SELECT 'drifts.{col}.' || {col}, COUNT(*) "
            f"FROM drifts WHERE {col} IS NOT NULL GROUP BY {col}"
        )
    db.execute("INSERT INTO counters SELECT 'events.total', COUNT(*) FROM events")
    db.execute(
        "INSERT INTO counters SELECT 'events.kind.' || kind, COUNT(*) FROM events GROUP BY kind"
    )
