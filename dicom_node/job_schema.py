"""The job database's table layout: one place for the SQL the store and its queries share.

Schema version 2 added ``result_version``, ``sending_since`` and ``purged_at`` (issue 10); a
version 1 database is upgraded in place with :data:`MIGRATE_1_TO_2` when the store opens it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dicom_node.job_states import Job, JobState

#: Bumped whenever the table layout changes; an unknown version is refused, never guessed at.
SCHEMA_VERSION = 2

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    -- AUTOINCREMENT: ids are never reused, so an old outbox/<id> folder never meets a new job.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{s.value}'" for s in JobState)})),
    reason TEXT,
    instance_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    outbox_dir TEXT,
    timings TEXT NOT NULL DEFAULT '{{}}',
    result_version INTEGER,
    sending_since REAL,
    purged_at REAL
);
-- At most one open (RECEIVED) batch per series: the target of record_instance's upsert.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_open_batch
    ON jobs (study_instance_uid, series_instance_uid) WHERE state = 'RECEIVED';
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at, id);
CREATE INDEX IF NOT EXISTS jobs_by_series ON jobs (series_instance_uid, id);
"""

#: Upgrade of a version 1 database to version 2 (columns added with NULL for old rows).
MIGRATE_1_TO_2 = (
    "ALTER TABLE jobs ADD COLUMN result_version INTEGER",
    "ALTER TABLE jobs ADD COLUMN sending_since REAL",
    "ALTER TABLE jobs ADD COLUMN purged_at REAL",
)

COLUMNS = (
    "id, study_instance_uid, series_instance_uid, calling_ae, state, reason, instance_count, "
    "created_at, updated_at, last_instance_at, attempts, runs, next_attempt_at, outbox_dir, timings, "
    "result_version, sending_since, purged_at"
)

UPSERT_INSTANCE = f"""
INSERT INTO jobs (study_instance_uid, series_instance_uid, calling_ae, state, instance_count,
                  created_at, updated_at, last_instance_at)
VALUES (?, ?, ?, '{JobState.RECEIVED.value}', 1, ?, ?, ?)
ON CONFLICT (study_instance_uid, series_instance_uid) WHERE state = '{JobState.RECEIVED.value}'
DO UPDATE SET instance_count = instance_count + 1,
              last_instance_at = max(last_instance_at, excluded.last_instance_at),
              updated_at = excluded.updated_at
RETURNING id, instance_count
"""


def row_to_job(row: sqlite3.Row) -> Job:
    """One row of ``SELECT {COLUMNS}`` as a :class:`~dicom_node.job_states.Job`."""
    return Job(
        id=row["id"],
        study_instance_uid=row["study_instance_uid"],
        series_instance_uid=row["series_instance_uid"],
        calling_ae=row["calling_ae"],
        state=JobState(row["state"]),
        reason=row["reason"],
        instance_count=row["instance_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_instance_at=row["last_instance_at"],
        attempts=row["attempts"],
        runs=row["runs"],
        next_attempt_at=row["next_attempt_at"],
        outbox_dir=Path(row["outbox_dir"]) if row["outbox_dir"] is not None else None,
        timings_json=row["timings"],
        result_version=row["result_version"],
        sending_since=row["sending_since"],
        purged_at=row["purged_at"],
    )
